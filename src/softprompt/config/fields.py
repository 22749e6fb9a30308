"""Dataclass fields with help text and a valid range: the single source for --help, the config
reference and the range check of every numeric key.

A numeric field declares its range where it is declared, ``hfield(8, "...", ge=1)``, and
:func:`check_ranges` is the one check that reads those declarations: :func:`softprompt.config.build`
runs it on every section built from a config (YAML, overrides, a run's ``config.yaml``), and the
config classes that library users also construct in Python (adapters, generation) run it in
``__post_init__``. ``None`` is always accepted where the type allows it (it means "off" or "default").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low <= x (or low < x when ``low_open``) and x <= high (or x < high when ``high_open``);
    ``integer``: the value must be an int. Floats must be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, integer: bool) -> str:
        """'an integer >= 1', 'a number in (0, 1]', 'a number > 0', ..."""
        what = "an integer" if integer else "a number"
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high}"
        return f"a finite {what[2:].strip()}" if not integer else what

    def short(self) -> str:
        """The range alone, for the config reference: '>= 1', '(0, 1]', 'finite'."""
        if self.low is None and self.high is None:
            return "finite"
        return self.describe(integer=False).removeprefix("a number").strip().removeprefix("in ").strip()


def _num(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else repr(x))


def hfield(default: Any = dataclasses.MISSING, help: str = "", *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, finite: bool = False, **kw):
    """A dataclass field carrying ``help`` (and its valid range: ``ge``/``gt``/``le``/``lt``, or
    ``finite`` alone) in its metadata; list/dict defaults are copied per instance. A range on a
    list field applies to each element."""
    metadata = {"help": help}
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise TypeError("hfield: give ge or gt, and le or lt, not both")
    if any(v is not None for v in (ge, gt, le, lt)) or finite:
        metadata["range"] = Range(ge if gt is None else gt, le if lt is None else lt, gt is not None, lt is not None)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def field_range(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


def _is_integer_field(f: dataclasses.Field) -> bool:
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return "float" not in text and "int" in text


def check_ranges(cls, values: dict[str, Any], where: str = "") -> None:
    """Raise ConfigError for the first value of ``values`` (field name -> value) outside its
    field's declared range: ``config key 'train.batch'=-3: expected an integer >= 1``."""
    for f in dataclasses.fields(cls):
        rng = field_range(f)
        if rng is None or f.name not in values:
            continue
        value = values[f.name]
        items = value if isinstance(value, (list, tuple)) else [value]
        integer = _is_integer_field(f)
        for item in items:
            if item is None or isinstance(item, bool) or not isinstance(item, (int, float)):
                continue  # None: off/default; other types are the type check's business
            if not rng.contains(item) or (integer and not isinstance(item, int)):
                key = f"{where}.{f.name}" if where else f.name
                shown = value if not isinstance(value, (list, tuple)) else list(value)
                each = "each item " if isinstance(value, (list, tuple)) else ""
                raise ConfigError(f"config key {key!r}={shown!r}: expected {each}"
                                  f"{rng.describe(integer)}")


def check_instance(obj, where: str = "") -> None:
    """:func:`check_ranges` on a dataclass instance's own field values."""
    check_ranges(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
