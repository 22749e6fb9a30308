"""Experiment configs: YAML with ``defaults``, Hydra-style dotted overrides, checked dataclasses.

YAML is read with a safe loader and there is no ``_target_``/import-path mechanism (components
are chosen by name from registries), so a config can never import or run code. Overrides:
``a.b=3`` sets an existing key, ``+a.b=3`` adds one, ``++a.b=3`` sets or adds, ``~a.b`` deletes;
``a=1,2`` is a sweep for :func:`expand_sweeps` (quote a string holding a comma: ``a='x,y'``).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import itertools
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union

import yaml

from .errors import ConfigError, closest
from .fields import check_ranges

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no python/* tags, so no code runs) with two YAML 1.2 fixes:
    ``1e-3`` is a float (not the string '1e-3') and dates stay strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _short(value: Any) -> str:
    r = _one_line(repr(value))
    return r if len(r) <= 80 else r[:77] + "..."


# -- files ------------------------------------------------------------------------------------

def load_yaml(path: str | Path) -> dict:
    """Read one YAML file (safe loader) whose top level is a mapping; an empty file is ``{}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {_one_line(e)}") from None
    try:
        data = _yaml(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {_one_line(e.problem or e.context or e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(e)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, found {type(data).__name__}")
    return data or {}


def _dirs(search: Sequence[str | Path] | None) -> list[Path]:
    return [Path.cwd() / "configs", REPO_CONFIGS] if search is None else [Path(d) for d in search]


def config_names(search: Sequence[str | Path] | None = None) -> list[str]:
    """Names of the configs in the search dirs (default: ./configs, then the repo's configs/)."""
    dirs = _dirs(search)
    return sorted({p.stem for d in dirs if d.is_dir() for p in [*d.glob("*.yaml"), *d.glob("*.yml")]})


def find_config(name: str, search: Sequence[str | Path] | None = None) -> Path:
    """``name`` -> ``<dir>/<name>.yaml`` in the first search dir that has it (default: ./configs,
    then the repo's configs/), else ``name`` itself as a path to a .yaml file."""
    dirs = _dirs(search)
    for d in dirs:
        for cand in (d / f"{name}.yaml", d / f"{name}.yml"):
            if cand.is_file():
                return cand.resolve()
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path.resolve()
        raise ConfigError(f"config file {name} does not exist")
    names = config_names(dirs)
    raise ConfigError(f"unknown config {name!r}{closest(name, names)}; available: {', '.join(names) or '(none)'}")


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: ``over`` merged into ``base`` recursively; lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_tree(path: Path, search: list[Path], stack: tuple[Path, ...], normalize=None) -> dict:
    if path in stack:
        chain = " -> ".join(p.stem for p in (*stack[stack.index(path):], path))
        raise ConfigError(f"config defaults form a cycle: {chain}")
    data = load_yaml(path)
    defaults = data.pop("defaults", [])
    defaults = [defaults] if isinstance(defaults, str) else defaults
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: 'defaults' must be a config name or a list of config names, got {_short(defaults)}")
    merged: dict = {}
    for name in defaults:  # a default is looked up next to this file first
        local = path.parent / name
        found = local.resolve() if local.suffix in (".yaml", ".yml") and local.is_file() else \
            find_config(name, [path.parent, *search])
        merged = deep_merge(merged, _load_tree(found, search, (*stack, path), normalize))
    return deep_merge(merged, normalize(data, str(path)) if normalize is not None else data)


def load_config(name: str | Path, overrides: Iterable[str] = (), aliases: dict[str, str] | None = None,
                search: Sequence[str | Path] | None = None,
                normalize: Callable[[dict, str], dict] | None = None) -> dict:
    """Find a config, resolve its ``defaults`` chain, then apply the overrides. ``normalize(data,
    where)`` rewrites each file's mapping before it is merged (e.g. old spellings of keys)."""
    dirs = _dirs(search)
    data = _load_tree(find_config(str(name), dirs), dirs, (), normalize)
    return apply_overrides(data, list(overrides), aliases)


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass or dict as YAML (keys in field order), atomically."""
    from .io import atomic_write

    text = yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# -- overrides --------------------------------------------------------------------------------

class Sweep(list):
    """The parsed values of a swept override (``a=1,2,3``); ``raw`` keeps their source text."""

    def __init__(self, values: Iterable[Any], raw: Iterable[str]):
        super().__init__(values)
        self.raw = list(raw)


class Override(NamedTuple):
    key: str
    value: Any  # a parsed value, a Sweep, or None for a deletion
    mode: Literal["set", "add", "force", "delete"] = "set"


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_value(raw: str) -> Any:
    """YAML-typed value of an override; anything YAML cannot read (or reads as a date, tag...) stays a string."""
    if not raw.strip() or raw.lstrip().startswith("#"):  # YAML would read these as null
        return raw.strip()
    try:
        value = _yaml(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else raw


_OVERRIDE = re.compile(r"(\+\+|\+|~)?([\w\-]+(?:\.[\w\-]+)*)(?:(=)(.*))?", re.DOTALL)
_MODES = {None: "set", "+": "add", "++": "force", "~": "delete"}


def parse_override(text: str) -> Override:
    """``a.b=v`` / ``+a.b=v`` / ``++a.b=v`` / ``~a.b`` -> Override(key, value, mode)."""
    m = _OVERRIDE.fullmatch(text.strip())
    if not m or (m[1] == "~") == bool(m[3]):
        expected = f"~{m[2]} (a deletion takes no value)" if m and m[1] == "~" else "key=value with a dotted key"
        raise ConfigError(f"bad override {text!r}: expected {expected}, e.g. train.lr=0.01")
    key, raw, mode = m[2], m[4], _MODES[m[1]]
    if mode == "delete":
        return Override(key, None, mode)
    parts = _split_top_level(raw)
    if len(parts) > 1:
        return Override(key, Sweep([parse_value(p) for p in parts], parts), mode)
    return Override(key, parse_value(raw), mode)


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """The cartesian product of swept overrides: ``["a=1,2", "b=x,y"]`` -> 4 override lists."""
    choices = []
    for text in overrides:
        ov = parse_override(text)
        if isinstance(ov.value, Sweep):
            head = text.strip().partition("=")[0]
            choices.append([f"{head}={r}" for r in ov.value.raw])
        else:
            choices.append([text])
    return [list(combo) for combo in itertools.product(*choices)]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists and empty dicts are leaves."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def apply_overrides(config: dict, overrides: Sequence[str], aliases: dict[str, str] | None = None) -> dict:
    """A new config with the overrides applied; ``aliases`` renames a key prefix (``{'method_cfg': 'method'}``)."""
    out = copy.deepcopy(config)
    for text in overrides:
        key, value, mode = parse_override(text)
        for old, new in (aliases or {}).items():
            if key == old or key.startswith(old + "."):
                key = new + key[len(old):]
                break
        if isinstance(value, Sweep):
            raise ConfigError(f"override {text!r} is a sweep of {len(value)} values; run it with the sweep command")
        *parents, last = key.split(".")
        node = out
        for i, part in enumerate(parents):
            if part not in node and mode in ("add", "force"):
                node[part] = {}
            if part in node and not isinstance(node[part], dict):
                where, kind = ".".join(parents[: i + 1]), type(node[part]).__name__
                raise ConfigError(f"override {text!r}: config key {where!r} is a {kind}, not a section")
            if part not in node:
                break
            node = node[part]
        else:
            if mode == "add" and last in node:
                raise ConfigError(f"override {text!r}: config key {key!r} already exists; drop the '+' to change it")
            if mode == "delete" and last in node:
                del node[last]
                continue
            if mode in ("add", "force") or (mode == "set" and last in node):
                node[last] = value
                continue
        hint = closest(key, {k.rsplit(".", i)[0] for k in flatten(out) for i in range(k.count(".") + 1)})
        tip = "" if hint or mode == "delete" else f"; write +{key}=... to add a new key"
        raise ConfigError(f"unknown config key {key!r}{hint}{tip}")
    return out


def check_folder_name(value: str | None, key: str) -> None:
    """``value`` names one folder (a run id): not a path, so a run stays under its output_dir."""
    if value is None:
        return
    bad = (not value.strip() or value in (".", "..") or any(c in value for c in "/\\")
           or any(ord(c) < 32 for c in value))
    if bad:
        raise ConfigError(f"config key {key!r}={value!r}: expected a folder name without '/', '\\' or control "
                          "characters, and not '.' or '..' (it names a folder under output_dir)")


# -- typed configs ----------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join(map(_type_name, typing.get_args(tp)))
    if tp is type(None):
        return "None"
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


class _Mismatch(Exception):
    """The value does not fit the type; :func:`_check` turns it into a ConfigError naming the key."""


def _convert(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for a in options:
            try:
                return _convert(a, value, key)
            except (_Mismatch, ConfigError):
                if len(options) == 1:  # X | None: keep X's own message
                    raise
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"config key {key!r}={_short(value)}: expected one of {', '.join(map(repr, args))}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return build(tp, value, key)
        raise _Mismatch
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Mismatch
            return tuple(_check(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        items = [_check(args[0] if args else Any, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if tuple in (origin, tp) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        ktp, vtp = args or (Any, Any)
        return {_check(ktp, k, f"{key} (a key)"): _check(vtp, v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, bool) and tp is not bool:  # True is an int to Python, not to a config
        raise _Mismatch
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    if origin is None and isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def _check(tp: Any, value: Any, key: str) -> Any:
    try:
        return _convert(tp, value, key)
    except _Mismatch:
        got = "None" if value is None else f"{type(value).__name__} {_short(value)}"
        raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {got}") from None


def build(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` (recursively) from a dict, checking every key and type."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"build() needs a dataclass type, got {cls!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"config key {where or cls.__name__!r}: expected a mapping, got {type(data).__name__} "
                          f"{_short(data)}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]

    def full(name: object) -> str:
        return f"{where}.{name}" if where else str(name)

    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {full(key)!r}{closest(full(key), map(full, names))}; "
                              f"valid keys{' under ' + repr(where) if where else ''}: {', '.join(names)}")
    missing = [full(f.name) for f in fields if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing required config key(s): {', '.join(map(repr, missing))}")
    kwargs = {name: _check(hints[name], value, full(name)) for name, value in data.items()}
    check_ranges(cls, kwargs, where)  # each numeric key's declared range (fields.hfield)
    try:
        return cls(**kwargs)
    except ValueError as e:  # a __post_init__ check
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {_one_line(e)}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (or dict) as plain nested dicts/lists/scalars (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj.value if isinstance(obj, enum.Enum) else obj
