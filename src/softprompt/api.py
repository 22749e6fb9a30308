"""Train from Python: the same trainer and run folder as ``softprompt train``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .commands.stages import run_pipeline as run
from .config import to_dict
from .experiment import ExperimentConfig, from_dict, resolve
from .training.assemble import make_trainer


@dataclass
class TrainResult:
    metrics: dict  # what metrics.json holds: the best checkpoint's evaluation (and before_/base_ for RL)
    run_dir: Path
    trainer: object


def train(config="sentiment_steering", overrides: list[str] | tuple = (), *, rewards=None, resume=None,
          progress: bool = True, preset: str | None = None) -> TrainResult:
    """Train ``config`` (a config name, looked up in ./configs and then among the shipped ones; a YAML
    path, a dict, or an ExperimentConfig) with ``key=value`` overrides; ``rewards``: Python functions
    ``f(prompts, completions, examples) -> list[float]`` (or ``(name, weight, f)`` tuples) used by an RL
    method instead of ``config.rewards``.

    >>> result = train("sentiment_steering", ["train.max_steps=4"], rewards=[my_reward])  # doctest: +SKIP
    >>> result.metrics["eval_reward"], result.run_dir                                    # doctest: +SKIP
    """
    if isinstance(config, ExperimentConfig):
        cfg = from_dict(to_dict(config), list(overrides))
    elif isinstance(config, dict):
        cfg = from_dict(config, list(overrides), preset=preset)
    else:
        cfg = resolve(str(config), list(overrides), preset=preset)
    trainer = make_trainer(cfg, resume=resume, progress=progress, rewards=rewards)
    metrics = trainer.fit(progress=progress)
    return TrainResult(metrics, Path(trainer.run_path), trainer)


def run_pipeline(config: str, overrides: list[str] | tuple = (), *, preset: str | None = None,
                 progress: bool = True) -> dict:
    """Run a multi-stage config (one with ``stages``, e.g. ``rlpt_cola``) as ``softprompt train``
    does; returns ``{stage: {"run" | "out": ..., "metrics" | "results": ..., "seconds": ...}}``.

    >>> out = run_pipeline("rlpt_cola", ["grpo.train.max_steps=10"], preset=None)   # doctest: +SKIP
    >>> out["glue"]["results"]["grpo"]["cola"]["eval_mcc"]                           # doctest: +SKIP
    """
    return run(str(config), list(overrides), preset, progress=progress)
