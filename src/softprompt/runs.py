"""Run folders: ``experiments/<model>/<dataset>/<method>/<run-id>/``.

Holds the resolved ``config.yaml``, ``epoch_metrics.jsonl``, ``metrics.json``,
TensorBoard events under ``tb/``, ``checkpoints/{best,last}`` and ``predictions.jsonl``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .config import dump_yaml, to_dict
from .io import atomic_write, write_json


def model_name(spec: str) -> str:
    name = Path(spec.rstrip("/")).name if ("/" in spec or spec.endswith(".gguf")) else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".gguf")) or "model"


def new_run_dir(config) -> Path:
    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S")
    root = Path(config.output_dir) / model_name(config.model) / config.dataset_name / config.method_name
    path = root / run_id
    suffix = 1
    while path.exists():  # never reuse a folder: a second run in the same second gets -2, -3, ...
        suffix += 1
        path = root / f"{run_id}-{suffix}"
    return path


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._tb = None

    @classmethod
    def create(cls, config) -> RunFolder:
        run = cls(new_run_dir(config))
        run.path.mkdir(parents=True)
        dump_yaml(to_dict(config), run.path / "config.yaml")
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def log_scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSON files still hold everything
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.path / "tb"))
        if self._tb:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{prefix}{key}", value, step)

    def append_epoch_metrics(self, row: dict) -> None:
        path = self.path / "epoch_metrics.jsonl"
        old = path.read_text() if path.exists() else ""
        atomic_write(path, lambda tmp: Path(tmp).write_text(old + json.dumps(row, sort_keys=True) + "\n"))

    def log_step(self, row: dict) -> None:
        """One line per optimizer step in ``train_log.jsonl`` (appended; read by the plots)."""
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def read_jsonl(self, name: str) -> list[dict]:
        """The rows of a JSONL file of the run; a line cut short by a crash is skipped."""
        path = self.path / name
        rows = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_epoch_metrics(self, global_step: int) -> None:
        """On resume, drop the rows logged after the checkpoint's step (they will be redone)."""
        for name in ("epoch_metrics.jsonl", "train_log.jsonl"):
            if not (self.path / name).exists():
                continue
            kept = [r for r in self.read_jsonl(name) if r.get("step", 0) <= global_step]
            atomic_write(self.path / name, lambda tmp, kept=kept: Path(tmp).write_text(
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / "metrics.json", metrics)

    def write_predictions(self, rows: list[dict], name: str = "predictions.jsonl") -> None:
        from .evaluation import write_predictions

        write_predictions(rows, self.path / name)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
