"""Issue 21's targets, read from finished runs: each one a mean over seeds, paired per seed where it
is a change against a baseline, with the command that made the runs.

Each target names its runs by run id (a glob, searched anywhere under --runs): the ids that
``softprompt sweep --name NAME ... seed=1,2,3`` gives (``NAME-seed=1``, ...). A target whose runs
are missing is written with ``"value": null, "met": false`` and said so, never left out.

    python bench/experiments.py --runs experiments --out bench/results/experiments.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from _common import write_results

from softprompt.commands.compare import Run, load_run
from softprompt.storage import read_json

PPO = ("softprompt sweep --config-name softprompt_ppo_sentiment --name ppo seed=1,2,3 "
       "prompts.data_dir=GLUE_DIR")
COND = "softprompt sweep --config-name sentiment_steering_conditional --name cond_grpo_lr1e-3 seed=1,2,3"
PTC_SMOL = ("softprompt sweep --config-name sst2_ptcprl_smollm2 --name {name} {method}seed=1,2,3 "
            "task.max_train_examples=1000 train.eval_every=0")
PTC_MINI = "softprompt sweep --config-name sst2_ptcprl_minilm --name {name} {method}seed=1,2,3 train.eval_every=0"
POLY = ("softprompt sweep --config-name polychromic_capitals --name capitals "
        "method.diversity_weight=0,0.5,1.0 seed=1,2,3 --eval-gen --n 20 --k all --verifier contains")


def ratio(key: str) -> Callable[[dict], float]:
    """The run's final ``eval_<key>`` over the base model's (``base_eval_<key>``), same prompts."""
    return lambda m: m[f"eval_{key}"] / m[f"base_eval_{key}"]


def metric(key: str) -> Callable[[dict], float]:
    return lambda m: m[key]


@dataclass
class Target:
    name: str
    runs: str                     # run-id glob of the runs measured
    value: Callable[[dict], float]
    op: str                       # ">=" or "<="
    target: float
    command: str
    baseline: str | None = None   # run-id glob: then the value is run - baseline, paired by seed
    note: str = ""                # what the number alone does not say

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value <= self.target


TARGETS = [
    Target("ppo_judge_positive", "ppo-seed=*", metric("eval_judge_positive_rate"), ">=", 0.90, PPO,
           note="the samples drift into positive word salad that the reward model and the judge both read as "
                "positive; perplexity shows it (docs/experiments/softprompt_ppo.md)"),
    Target("ppo_perplexity_ratio", "ppo-seed=*", ratio("perplexity"), "<=", 1.5, PPO),
    Target("ppo_distinct2_ratio", "ppo-seed=*", ratio("distinct_2"), ">=", 0.9, PPO),
    # GRPO with the conditional prompt (PPO's conditional run, one seed, is on the experiment page)
    Target("conditional_met_negative", "cond_grpo_lr1e-3-seed=*", metric("eval_condition_met/negative"), ">=", 0.85,
           COND),
    Target("conditional_met_positive", "cond_grpo_lr1e-3-seed=*", metric("eval_condition_met/positive"), ">=", 0.85,
           COND),
    Target("conditional_perplexity_ratio", "cond_grpo_lr1e-3-seed=*", ratio("perplexity"), "<=", 2.0, COND),
    # lambda 1: the paper's f_poly, against GRPO (lambda 0) on the same seed
    Target("polychromic_pass10_gain", "capitals-diversity_weight=1.0-seed=*", metric("gen_pass@10"), ">=", 0.05,
           POLY, baseline="capitals-diversity_weight=0-seed=*"),
    Target("polychromic_pass1_change", "capitals-diversity_weight=1.0-seed=*", metric("gen_pass@1"), ">=", -0.02,
           POLY, baseline="capitals-diversity_weight=0-seed=*"),
    # PTCPRL against MLE alone at equal steps and examples: the same config with method.name=mle
    Target("ptcprl_phase2_gain_smollm2", "ptcprl_smollm2*-seed=*", metric("eval_accuracy"), ">=", 0.0,
           PTC_SMOL.format(name="ptcprl_smollm2", method="") + "; "
           + PTC_SMOL.format(name="mle_smollm2", method="method.name=mle "), baseline="mle_smollm2*-seed=*"),
    Target("ptcprl_phase2_gain_minilm", "ptcprl_minilm-seed=*", metric("eval_accuracy"), ">=", 0.0,
           PTC_MINI.format(name="ptcprl_minilm", method="") + "; "
           + PTC_MINI.format(name="mle_minilm", method="method.name=mle "), baseline="mle_minilm*-seed=*"),
    Target("sst2_smollm2_accuracy", "prefix16k-seed=*", metric("eval_accuracy"), ">=", 0.90,
           "softprompt sweep --config-name sst2_prefix_smollm2 --name prefix16k seed=1,2,3"),
    Target("sst2_minilm_accuracy", "mprefix_all-seed=*", metric("eval_accuracy"), ">=", 0.87,
           "softprompt sweep --config-name sst2_prefix_minilm --name mprefix_all seed=1,2,3"),
    Target("cola_mcc", "cola_lora_smollm2-seed=*", metric("eval_mcc"), ">=", 0.30,
           "softprompt sweep --config-name cola_lora_smollm2 --name cola_lora_smollm2 seed=1,2,3"),
]


def find_runs(root: Path, pattern: str) -> dict[int, Run]:
    """Finished runs whose folder name matches ``pattern``, by their config's seed."""
    runs = {}
    for path in sorted(root.rglob(pattern)):
        if path.is_dir() and (path / "metrics.json").exists():
            run = load_run(path)  # eval_* and eval-gen's gen_*; the base model's and step 0's numbers too:
            run.metrics.update({k: v for k, v in read_json(path / "metrics.json").items()
                                if k.startswith(("base_eval_", "before_eval_"))})
            seed = int(run.config.get("seed", 0))
            if seed in runs:
                sys.exit(f"{path}: seed {seed} twice for {pattern!r} (also {runs[seed].path})")
            runs[seed] = run
    return runs


def measure(t: Target, root: Path) -> dict:
    runs = find_runs(root, t.runs)
    base = find_runs(root, t.baseline) if t.baseline else {}
    seeds = sorted(s for s in runs if not t.baseline or s in base)
    out = {"name": t.name, "target": t.target, "op": t.op, "command": t.command, "seeds": len(seeds),
           **({"note": t.note} if t.note else {})}
    if not seeds:
        return {**out, "value": None, "std": None, "met": False, "per_seed": {}, "status": "not run"}
    per_seed = {}
    for s in seeds:
        try:
            v = t.value(runs[s].metrics) - (t.value(base[s].metrics) if t.baseline else 0.0)
        except KeyError as e:
            sys.exit(f"{runs[s].path}: metrics.json has no {e} (needed by target {t.name})")
        per_seed[s] = v
    values = list(per_seed.values())
    mean = statistics.fmean(values)
    return {**out, "value": mean, "std": statistics.stdev(values) if len(values) > 1 else None,
            "met": len(values) >= 3 and t.met(mean), "per_seed": per_seed,
            "runs": [str(runs[s].path) for s in seeds], **({"baseline": t.baseline} if t.baseline else {}),
            "status": "measured" if len(values) >= 3 else f"{len(values)} seed(s): fewer than 3"}


def table(rows: list[dict]) -> str:
    lines = ["| target | value (mean ± std) | wanted | met | seeds |", "| --- | ---: | --- | --- | ---: |"]
    for r in rows:
        value = "not run" if r["value"] is None else f"{r['value']:.3f}" + (
            f" ± {r['std']:.3f}" if r["std"] is not None else "")
        lines.append(f"| `{r['name']}` | {value} | {r['op']} {r['target']} | {'yes' if r['met'] else 'no'} | "
                     f"{r['seeds']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="experiments", help="folder holding the runs (searched recursively)")
    p.add_argument("--out", default="bench/results/experiments.json")
    args = p.parse_args()
    rows = [measure(t, Path(args.runs)) for t in TARGETS]
    print(table(rows))
    write_results({"runs": str(args.runs), "targets": rows}, args.out)


if __name__ == "__main__":
    main()
