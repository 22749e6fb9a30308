"""Config files: YAML with ``defaults``, Hydra-style dotted overrides, sweeps.

YAML is read with a safe loader and there is no ``_target_``/import-path mechanism (components
are chosen by name from registries), so a config can never import or run code. Overrides:
``a.b=3`` sets an existing key, ``+a.b=3`` adds one, ``++a.b=3`` sets or adds, ``~a.b`` deletes;
``a=1,2`` is a sweep for :func:`expand_sweeps` (quote a string holding a comma: ``a='x,y'``).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from ..errors import ConfigError, closest
from ..storage import atomic_write
from .typed import _one_line, _short, to_dict

#: the shipped experiment configs: package data (``softprompt/configs/*.yaml``), found through the installed package
PACKAGE_CONFIGS = Path(str(resources.files("softprompt") / "configs"))


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no python/* tags, so no code runs) with two YAML 1.2 fixes:
    ``1e-3`` is a float (not the string '1e-3') and dates stay strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


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


def config_dirs() -> list[Path]:
    """Where ``--config-name NAME`` looks, in order: ``./configs`` in the current directory, then the
    configs shipped in the package."""
    return [Path.cwd() / "configs", PACKAGE_CONFIGS]


def _dirs(search: Sequence[str | Path] | None) -> list[Path]:
    return config_dirs() if search is None else [Path(d) for d in search]


def config_names(search: Sequence[str | Path] | None = None) -> list[str]:
    """Names of the configs in the search dirs (default: ./configs, then the package's configs)."""
    dirs = _dirs(search)
    return sorted({p.stem for d in dirs if d.is_dir() for p in [*d.glob("*.yaml"), *d.glob("*.yml")]})


def config_description(path: str | Path) -> str:
    """A config's one-line description: the first line of the comment at the top of its file ('' if none)."""
    try:
        first = Path(path).read_text(encoding="utf-8").lstrip("\ufeff").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def find_config(name: str, search: Sequence[str | Path] | None = None) -> Path:
    """``name`` -> ``<dir>/<name>.yaml`` in the first search dir that has it (default: ./configs,
    then the package's configs), else ``name`` itself as a path to a .yaml file."""
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
    return deep_merge(merged, normalize(data, str(path), merged) if normalize is not None else data)


def load_config(name: str | Path, overrides: Iterable[str] = (), aliases: dict[str, str] | None = None,
                search: Sequence[str | Path] | None = None,
                normalize: Callable[[dict, str, dict], dict] | None = None) -> dict:
    """Find a config, resolve its ``defaults`` chain, then apply the overrides. ``normalize(data,
    where, inherited)`` rewrites each file's mapping before it is merged into what its defaults
    gave (``inherited``), e.g. older spellings of keys; it may also replace a section of
    ``inherited`` that the file swaps (an adapter of another type)."""
    dirs = _dirs(search)
    data = _load_tree(find_config(str(name), dirs), dirs, (), normalize)
    return apply_overrides(data, list(overrides), aliases)


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass or dict as YAML (keys in field order), atomically."""
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
