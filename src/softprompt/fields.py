"""Dataclass fields with help text: the single source for --help and the config reference."""

from __future__ import annotations

import dataclasses
from typing import Any


def hfield(default: Any = dataclasses.MISSING, help: str = "", **kw):
    """A dataclass field carrying ``help`` in its metadata; list/dict defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
