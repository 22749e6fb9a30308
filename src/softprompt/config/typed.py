"""Typed configs: a checked dataclass from a mapping (every key, type and declared range), and back.

:func:`build` turns a mapping into a dataclass (recursively), naming the key at fault in a one-line
:class:`ConfigError`; :func:`to_dict` gives the plain mapping a run folder saves.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError, closest
from .fields import check_ranges


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _short(value: Any) -> str:
    r = _one_line(repr(value))
    return r if len(r) <= 80 else r[:77] + "..."



def check_folder_name(value: str | None, key: str) -> None:
    """``value`` names one folder (a run id): not a path, so a run stays under its output_dir."""
    if value is None:
        return
    bad = (not value.strip() or value in (".", "..") or any(c in value for c in "/\\")
           or any(ord(c) < 32 for c in value))
    if bad:
        raise ConfigError(f"config key {key!r}={value!r}: expected a folder name without '/', '\\' or control "
                          "characters, and not '.' or '..' (it names a folder under output_dir)")


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
    """A dataclass (or dict) as plain nested dicts/lists/scalars (paths as strings, tuples as lists);
    a dataclass with a ``config_tag()`` (adapters, methods) leads with the key that names it."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        tag = getattr(obj, "config_tag", None)  # a registered component: its name first (type: lora)
        return {**dict([tag()]), **out} if tag is not None else out
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj.value if isinstance(obj, enum.Enum) else obj
