"""``softprompt convert-weights``: turn pickle weight files (``.bin``, ``.pt``, ``.pth``) into
safetensors, the only format softprompt loads.

The pickle is read with ``torch.load(weights_only=True)``: plain tensors and containers only,
so a file that would run code when unpickled is refused instead of executed. A model
directory's ``pytorch_model.bin`` (or its shards and index) becomes ``model.safetensors`` (or
shards and ``model.safetensors.index.json``) beside it; the pickle files are left in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..storage import save_tensors

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors; others for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: refused or unreadable with torch.load(weights_only=True): {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ModelLoadError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    return obj


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    seen: dict[int, str] = {}
    out = {}
    for name, t in tensors.items():  # tied weights share storage: safetensors wants them separate
        key = t.untyped_storage().data_ptr()
        out[name] = t.clone() if key in seen else t
        seen.setdefault(key, name)
    save_tensors(path, out, metadata={"format": "pt"})


def convert_weights(path: str | Path, out: str | Path | None = None) -> list[Path]:
    """Convert a pickle weights file, or a model directory's pickle weights; return what was written."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist")
    if path.is_file():
        if path.suffix not in PICKLE_SUFFIXES:
            raise ModelLoadError(f"{path}: expected a {', '.join(PICKLE_SUFFIXES)} file or a model directory")
        target = Path(out) if out else path.with_suffix(".safetensors")
        _save(_load_pickle(path), target)
        return [target]
    folder = Path(out) if out else path
    folder.mkdir(parents=True, exist_ok=True)
    index = path / "pytorch_model.bin.index.json"
    if index.exists():
        meta = json.loads(index.read_text())
        shards = sorted(set(meta["weight_map"].values()))
        names = {s: s.replace("pytorch_model", "model").replace(".bin", ".safetensors") for s in shards}
        written = []
        for shard in shards:
            _save(_load_pickle(path / shard), folder / names[shard])
            written.append(folder / names[shard])
        new_index = {"metadata": meta.get("metadata", {}),
                     "weight_map": {k: names[v] for k, v in meta["weight_map"].items()}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(new_index, indent=2))
        return written + [folder / "model.safetensors.index.json"]
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise ModelLoadError(f"{path} holds no pickle weight files ({', '.join(PICKLE_SUFFIXES)}) to convert")
    if len(pickles) > 1:
        raise ModelLoadError(f"{path} holds several pickle files ({', '.join(p.name for p in pickles)}) and no "
                             "pytorch_model.bin.index.json; convert them one by one")
    target = folder / "model.safetensors"
    _save(_load_pickle(pickles[0]), target)
    return [target]
