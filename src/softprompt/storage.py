"""Small file helpers: atomic writes and safetensors reads with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import AdapterLoadError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the result onto ``path``.

    A reader sees the old file or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_json(path: str | Path, what: str = "file") -> dict:
    path = Path(path)
    if not path.exists():
        raise AdapterLoadError(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterLoadError(f"{what} {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{what} {path} should hold a JSON object, found {type(data).__name__}")
    return data


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file is an AdapterLoadError."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in {".pt", ".pth", ".bin", ".pkl"}:
        raise AdapterLoadError(f"{path}: refusing to unpickle weights; only .safetensors files are loaded")
    if not path.exists():
        raise AdapterLoadError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError, OSError, ... depending on damage
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdapterLoadError(f"{path} is not a readable safetensors file (truncated or corrupt?): {msg}") from None
