"""``softprompt sweep``: one config over several values and seeds, then the compare report.

    softprompt sweep --config-name polychromic_baseline method.diversity_weight=0,1.0,2.0 seed=1,2,3

Every override whose value is a comma-separated list (not quoted, not a YAML list or mapping)
is swept, in the config engine's one grammar (:func:`softprompt.config.expand_sweeps`); the runs
are the Cartesian product, run one after another in this process through the same path as
``softprompt train`` (:func:`softprompt.training.assemble.train_once`). Each
run's id names its plain (unquoted, scalar) override values (``<name>-diversity_weight=1.0-seed=2``), so a sweep started again
skips the runs that finished and resumes the one that was cut off.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config import expand_sweeps
from ..errors import SoftPromptError
from ..experiment import resolve
from ..runs import new_run_dir
from ..training.assemble import resume_point, train_once
from .compare import compare
from .eval_gen import eval_gen_run


def run_id_of(name: str, combo: list[str]) -> str:
    """``name`` and every plain (unquoted, scalar) override as ``key=value``, the key's last part."""
    plain = [c for c in combo if c.split("=", 1)[1][:1] not in ("\"", "'", "[", "{")]
    parts = [f"{c.split('=', 1)[0].rsplit('.', 1)[-1]}={c.split('=', 1)[1]}" for c in plain]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join([name, *parts]))


def sweep(config_name: str, overrides: list[str], name: str | None = None, eval_gen: dict | None = None,
          report: bool = True, progress: bool = True, console=None) -> tuple[list[Path], Path | None]:
    """Run every combination (skipping finished ones), optionally ``eval-gen`` each, then compare."""
    if any(o.split("=", 1)[0] in ("run_id",) for o in overrides):
        raise SoftPromptError("sweep names its runs itself: drop the run_id override (use --name)")
    name = name or Path(config_name).stem
    combos = expand_sweeps(overrides)
    paths, failed = [], []
    for i, combo in enumerate(combos, 1):
        run_id = run_id_of(name, combo)
        config = resolve(config_name, [*combo, f"run_id={run_id}"])  # bad overrides fail here, before any run
        path = new_run_dir(config).parent / run_id
        _say(console, f"[{i}/{len(combos)}] {run_id}")
        if (path / "metrics.json").exists():
            _say(console, "  finished before: kept")
        else:
            resume_point(path)  # a folder without a checkpoint stops the sweep, not just this run
            try:
                train_once(config, path, progress=progress)
            except SoftPromptError as e:
                failed.append(f"{run_id}: {e}")
                _say(console, f"  failed: {e}")
                continue
        if eval_gen is not None and not (path / "eval_gen" / "metrics.json").exists():
            eval_gen_run(str(path), progress=progress, **eval_gen)
        paths.append(path)
    out = None
    if report and len(paths) >= 2:
        out = compare(paths, out=paths[0].parent / f"{name}-report")
    if failed:
        raise SoftPromptError(f"{len(failed)} of {len(combos)} runs failed: " + "; ".join(failed))
    return paths, out


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)
