"""``softprompt sweep``: one config over several values and seeds, then the compare report.

    softprompt sweep --config-name polychromic_baseline method.diversity_weight=0,1.0,2.0 seed=1,2,3

Every override whose value is a comma-separated list (not quoted, not a YAML list or mapping)
is swept; the runs are the Cartesian product, run one after another in this process. Each
run's id names its plain (unquoted, scalar) override values (``<name>-diversity_weight=1.0-seed=2``), so a sweep started again
skips the runs that finished and resumes the one that was cut off.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from ..errors import SoftPromptError
from ..experiment import resolve
from ..runs import new_run_dir
from ..training.assemble import make_trainer, resume_point
from .compare import compare
from .eval_gen import eval_gen_run


def split_override(item: str) -> tuple[str, list[str]]:
    """'a.b=1,2' -> ('a.b', ['1', '2']); quoted values and YAML lists/mappings are one value."""
    if "=" not in item:
        raise SoftPromptError(f"override {item!r}: expected key=value")
    key, value = item.split("=", 1)
    v = value.strip()
    if not v or v[0] in "\"'[{" or "," not in v:
        return key, [value]
    return key, [x.strip() for x in v.split(",") if x.strip()]


def expand(overrides: list[str]) -> list[list[str]]:
    """The Cartesian product of the swept overrides, each as a full list of key=value overrides."""
    axes = [[f"{k}={v}" for v in values] for k, values in map(split_override, overrides)]
    return [list(combo) for combo in itertools.product(*axes)]


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
    combos = expand(overrides)
    paths, failed = [], []
    for i, combo in enumerate(combos, 1):
        run_id = run_id_of(name, combo)
        config = resolve(config_name, [*combo, f"run_id={run_id}"])  # bad overrides fail here, before any run
        path = new_run_dir(config).parent / run_id
        _say(console, f"[{i}/{len(combos)}] {run_id}")
        if (path / "metrics.json").exists():
            _say(console, "  finished before: kept")
        else:
            resume = resume_point(path)  # a folder without a checkpoint stops the sweep, not just this run
            try:
                make_trainer(config, resume=resume, progress=progress).fit(progress=progress)
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
