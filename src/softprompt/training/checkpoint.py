"""Training checkpoints: adapter + head + optimizer + scheduler + RNG state, written atomically.

A checkpoint is a folder (``checkpoints/last``, ``checkpoints/best``, and ``checkpoints/step-<N>``
every ``train.save_steps``) holding
- ``softprompt_adapter.json`` + ``adapter.safetensors`` (a loadable adapter on its own, with
  ``backbone_layers.safetensors`` when transformer blocks train too),
- ``head.safetensors`` for classifiers with a head,
- ``reference.safetensors`` for RL runs with a KL reference: the adapter as the run started,
- ``optimizer.safetensors`` (every tensor of the optimizer state) + ``trainer_state.json``
  (optimizer hyperparameters, scheduler state, RNG states, counters).
It is written into a temporary sibling folder and swapped in by renames, so ``last`` is
always a complete checkpoint: the old one or the new one. Nothing is pickled.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import AdapterLoadError
from ..modeling.classifiers import load_head, save_head
from ..modeling.model import load_backbone_layers, save_adapter_and_blocks
from ..storage import load_tensors, read_json, save_tensors, write_json

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"
REFERENCE_FILE = "reference.safetensors"


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """Python's, NumPy's and torch's RNG states, and each CUDA device's when there are any
    (sampling on a GPU draws from the device's generator)."""
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    saved = state.get("cuda") or []
    if saved and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(saved) != count:
            import logging

            logging.getLogger("softprompt").warning(
                "the checkpoint holds the RNG states of %d CUDA devices, this machine has %d: the first %d are "
                "restored", len(saved), count, min(len(saved), count))
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in saved[:count]])


# --------------------------------------------------------------------------- optimizer


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --------------------------------------------------------------------------- save / load


def save_checkpoint(directory: Path, classifier, optimizer, scheduler, counters: dict,
                    reference: dict[str, torch.Tensor] | None = None) -> None:
    """Write a complete checkpoint to ``directory`` atomically (swap of folders); ``reference``:
    the KL reference's weights (rollout.Reference.state), when it has any."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_adapter_and_blocks(classifier.model.adapter, tmp, classifier.model.model)
        save_head(classifier, tmp)
        if reference:
            save_tensors(tmp / REFERENCE_FILE, reference)
        tensors, optim_meta = optimizer_tensors(optimizer)
        save_tensors(tmp / OPTIM_FILE, tensors)
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        write_json(tmp / STATE_FILE, {"counters": counters, "optimizer": optim_meta, "scheduler": sched,
                                      "rng": rng_state()})
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_checkpoint(directory: Path) -> Path | None:
    """``directory`` if complete, else the previous copy a crash mid-swap left behind."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(f".{directory.name}.old")):
        if (candidate / STATE_FILE).exists():
            return candidate
    return None


STEP_PREFIX = "step-"


def step_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """The complete ``step-<N>`` checkpoints under ``checkpoints`` as (N, folder), oldest first."""
    found = []
    for path in Path(checkpoints).glob(f"{STEP_PREFIX}*"):
        number = path.name[len(STEP_PREFIX):]
        if number.isdigit() and find_checkpoint(path) is not None:
            found.append((int(number), path))
    return sorted(found)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The complete checkpoint under ``checkpoints`` furthest into training: ``last`` or a
    ``step-<N>`` (train.save_steps) written after it, by their saved global step; None if none."""
    best, best_step = None, -1
    for path in [checkpoints / "last", *(p for _, p in step_checkpoints(checkpoints))]:
        found = find_checkpoint(path)
        if found is None:
            continue
        step = read_json(found / STATE_FILE, "trainer state")["counters"].get("global_step", 0)
        if step > best_step:  # a tie goes to last
            best, best_step = found, step
    return best


def prune_step_checkpoints(checkpoints: Path, keep: int) -> list[Path]:
    """Delete the oldest ``step-<N>`` checkpoints beyond the newest ``keep``; return what went."""
    gone = [path for _, path in step_checkpoints(checkpoints)[:-keep]] if keep else []
    for path in gone:
        shutil.rmtree(path)
    return gone


def load_checkpoint(directory: Path, classifier, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG state; return the saved counters."""
    found = find_checkpoint(directory)
    if found is None:
        raise AdapterLoadError(f"no complete checkpoint in {directory}")
    state = read_json(found / STATE_FILE, "trainer state")
    adapter = classifier.model.adapter
    adapter.load_adapter_state_dict(load_tensors(found / "adapter.safetensors"), str(found / "adapter.safetensors"))
    load_head(classifier, found)
    load_backbone_layers(found, classifier.model.backbone)
    load_optimizer(optimizer, load_tensors(found / OPTIM_FILE), state["optimizer"])
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    set_rng_state(state["rng"])
    return state["counters"]


def load_reference(directory: Path, reference) -> None:
    """Give ``reference`` (rollout.Reference) the weights checkpoint ``directory`` kept, so a
    resumed run anchors its KL where the run started, not at a fresh build of its init (an
    ``init_from`` source may have changed since). Checkpoints written before it was kept have
    none: the rebuilt reference stays, with a warning."""
    import logging

    path = Path(directory) / REFERENCE_FILE
    if path.exists():
        reference.load_state(load_tensors(path), str(path))
    elif reference.state():
        logging.getLogger("softprompt").warning(
            "%s has no %s (written by an older softprompt): the KL reference is rebuilt from the config's "
            "adapter init", directory, REFERENCE_FILE)
