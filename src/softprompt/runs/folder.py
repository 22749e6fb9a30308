"""Run folders: ``experiments/<model>/<dataset>/<method>/<run-id>/``.

Holds the resolved ``config.yaml``, ``epoch_metrics.jsonl``, ``metrics.json``,
TensorBoard events under ``tb/`` (and the other trackers of ``train.report_to``, see
``tracking``), ``checkpoints/{best,last}``, ``predictions.jsonl`` and
``train_result.log``, one human-readable line per step and per evaluation.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..config import dump_yaml, load_yaml, to_dict
from ..errors import SoftPromptError
from ..experiment import ExperimentConfig, from_dict
from ..storage import atomic_write, write_json
from .tracking import Trackers

CONFIG_FILE = "config.yaml"


def model_name(spec: str) -> str:
    name = Path(spec.rstrip("/")).name if ("/" in spec or spec.endswith(".gguf")) else spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".gguf")) or "model"


def run_root(config) -> Path:
    """``<output_dir>/<model>/<dataset>/<method>``: where the config's run folders go."""
    return Path(config.output_dir) / model_name(config.model.name) / config.dataset_name / config.method_name


def new_run_dir(config) -> Path:
    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S")
    root = run_root(config)
    path = root / run_id
    suffix = 1
    while path.exists():  # never reuse a folder: a second run in the same second gets -2, -3, ...
        suffix += 1
        path = root / f"{run_id}-{suffix}"
    return path


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.trackers = None  # tracking.Trackers, once start_tracking ran

    @classmethod
    def create(cls, config) -> RunFolder:
        run = cls(new_run_dir(config))
        run.path.mkdir(parents=True)
        dump_yaml(to_dict(config), run.path / CONFIG_FILE)
        return run

    @property
    def has_config(self) -> bool:
        return (self.path / CONFIG_FILE).is_file()

    def read_config(self, raw: bool = False) -> ExperimentConfig | dict:
        """The config this run was trained with (``raw``: the saved mapping as it is), read back
        through the same resolution as any config, so older spellings still load."""
        if not self.has_config:
            raise SoftPromptError(f"{self.path} is not a run folder (no {CONFIG_FILE})")
        data = load_yaml(self.path / CONFIG_FILE)
        return data if raw else from_dict(data, where=str(self.path / CONFIG_FILE))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def start_tracking(self, names: list[str], config: dict, project: str | None = None) -> None:
        """Open the trackers ``names`` (``train.report_to``) for this run; see ``tracking``."""
        names = [n for n in names if n != "none"]
        self.trackers = Trackers(names, self.path, config, project) if names else None

    def log_scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """Numbers of ``values`` (as ``<prefix><key>``) to the run's trackers at ``step``."""
        if self.trackers is not None:
            self.trackers.log({f"{prefix}{k}": v for k, v in values.items()}, step)

    def append_epoch_metrics(self, row: dict) -> None:
        path = self.path / "epoch_metrics.jsonl"
        old = path.read_text() if path.exists() else ""
        atomic_write(path, lambda tmp: Path(tmp).write_text(old + json.dumps(row, sort_keys=True) + "\n"))
        self.log_line("eval", row)

    def log_step(self, row: dict) -> None:
        """One line per optimizer step in ``train_log.jsonl`` (appended; read by the plots)."""
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        self.log_line("train", row)

    def log_line(self, kind: str, row: dict) -> None:
        """``train_result.log``: ``<time> <kind> step N epoch E | key value | ...``, for people."""
        shown = " | ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k not in ("step", "epoch")
                           and isinstance(v, (int, float)) and not isinstance(v, bool))
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {kind:5s} step {row.get('step', 0)} epoch {row.get('epoch', 0)}"
        with open(self.path / "train_result.log", "a") as f:
            f.write(f"{line} | {shown}\n" if shown else line + "\n")

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
        self.log_line("resume", {"step": global_step})  # the human log keeps its history

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / "metrics.json", metrics)

    def write_predictions(self, rows: list[dict], name: str = "predictions.jsonl") -> None:
        write_predictions(rows, self.path / name)

    def close(self) -> None:
        """Finish the trackers (the run's plots and tables go to them as artifacts)."""
        if self.trackers is not None:
            self.trackers.finish()
            self.trackers = None


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def write_predictions(rows: list[dict], path: Path) -> None:
    """One JSON object per line, written atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                for r in rows)))
