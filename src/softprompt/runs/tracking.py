"""Experiment trackers (``train.report_to``) through accelerate's tracker classes.

Each tracker gets what the run folder holds: every scalar of ``train_log.jsonl`` (``train/<key>``)
and of the evaluations (``eval/<key>``) at its optimizer step (MLflow: ``train.<key>``, see
:func:`mlflow_names`), the resolved config as the run's
parameters (flattened: ``train.lr``), the run id as the run's name, and at the end the run's plots
and tables (``*.png``, ``*.md``, ``metrics.json``) as artifacts where the tracker keeps files
(W&B, MLflow). TensorBoard writes ``tb/`` in the run folder, as it always has.

A resumed run continues the same W&B and MLflow runs: their ids are kept in ``trackers.json``.
Only the main process has a run folder, so only it reports.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from ..errors import ConfigError
from ..storage import read_json, write_json

# report_to name -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow")}
STATE_FILE = "trackers.json"
DEFAULT_PROJECT = "softprompt"


def check_trackers(names: list[str]) -> None:
    """Raise a ConfigError naming the extra for the first tracker of ``names`` that is not installed
    (before any run folder is written)."""
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.report_to: {name} is not installed; pip install 'softprompt[{extra}]' "
                              f"(or drop {name} from train.report_to)")


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; lists and None as text (trackers' params
    take scalars)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def mlflow_names(values: dict) -> dict:
    """MLflow's file store keeps a metric per file named by its path, so ``train/loss`` and
    ``train/loss/mle`` cannot both exist: MLflow gets ``train.loss`` and ``train.loss.mle``."""
    return {k.replace("/", "."): v for k, v in values.items()}


def _project(name: str, project: str | None) -> str:
    env = {"wandb": "WANDB_PROJECT", "mlflow": "MLFLOW_EXPERIMENT_NAME"}.get(name)
    return project or (os.environ.get(env) if env else None) or DEFAULT_PROJECT


class Trackers:
    """The run's trackers: ``log`` scalars at a step, ``finish`` with the artifacts."""

    def __init__(self, names: list[str], run_path: Path, config: dict, project: str | None = None):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        check_trackers(names)
        self.run_path = Path(run_path)
        state_path = self.run_path / STATE_FILE
        state = read_json(state_path, "tracker state") if state_path.exists() else {}
        run_id = self.run_path.name
        self.trackers = []
        for name in names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            if name == "tensorboard":
                tracker = cls("tb", str(self.run_path))
            elif name == "wandb":  # a stable id from the folder: a resume continues the same W&B run
                wid = state.get("wandb", {}).get("id") or hashlib.sha1(
                    str(self.run_path.resolve()).encode()).hexdigest()[:16]
                tracker = cls(_project(name, project), name=run_id, id=wid, resume="allow",
                              dir=str(self.run_path))
                state["wandb"] = {"id": wid}
            else:  # mlflow
                tracker = cls(_project(name, project), run_name=run_id, run_id=state.get("mlflow", {}).get("run_id"))
            tracker.start()
            if name == "mlflow":
                state["mlflow"] = {"run_id": tracker.active_run.info.run_id}
            self.trackers.append(tracker)
        if state:
            write_json(state_path, state)
        params = flatten(config)
        for tracker in self.trackers:  # flattened to scalars: what TensorBoard's hparams and MLflow's params take
            tracker.store_init_configuration(params)

    def log(self, values: dict, step: int) -> None:
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            for tracker in self.trackers:
                tracker.log(mlflow_names(numbers) if tracker.name == "mlflow" else numbers, step=step)

    def finish(self) -> None:
        """Upload the run's plots and tables (where the tracker keeps files), then close each tracker."""
        files = sorted([*self.run_path.glob("*.png"), *self.run_path.glob("*.md"),
                        *self.run_path.glob("metrics.json")])
        for tracker in self.trackers:
            if tracker.name == "wandb":
                for path in files:
                    tracker.tracker.save(str(path), base_path=str(self.run_path), policy="now")
            elif tracker.name == "mlflow":
                for path in files:
                    tracker.log_artifact(str(path))
            tracker.finish()
        self.trackers = []
