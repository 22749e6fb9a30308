"""Whether the ranks must run every forward together: set by training's process group while the
frozen backbone is sharded across them (``train.strategy`` fsdp or deepspeed), read by generation,
the CPU kernels and the grouped log-probs, which must then keep every rank in step."""

from __future__ import annotations

from typing import Protocol


class _Group(Protocol):
    def any(self, flag: bool) -> bool: ...


_GROUP: _Group | None = None  # the process group while a sharded backbone needs every rank in every forward


def set_lockstep(group: _Group | None) -> None:
    """Enter lockstep with ``group`` (its ``any(flag)`` ORs a flag over the ranks), or leave it (None)."""
    global _GROUP
    _GROUP = group


def lockstep_group() -> _Group | None:
    return _GROUP


def in_lockstep() -> bool:
    return _GROUP is not None


def lockstep_any(flag: bool) -> bool:
    """``flag`` on any rank when the backbone is sharded (the ranks must forward together), else ``flag``."""
    return _GROUP.any(flag) if _GROUP is not None else flag
