"""eval-gen, compare and sweep on a tiny saved model: files, numbers and errors."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import save_backbone, tiny_llama
from test_rl import PROMPTS

from softprompt.commands.cli import main
from softprompt.metrics.diversity import pass_at_k


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """A 2 x 2 sweep (diversity_weight x seed) of polychromic on a tiny model, each run eval-gen'd."""
    tmp = tmp_path_factory.mktemp("sweep")
    save_backbone(tiny_llama(vocab_size=50), tmp / "model")
    config = {
        "model": str(tmp / "model"), "output_dir": str(tmp / "exp"),
        "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random"},
        "method": {"name": "polychromic", "n_generations": 4, "set_size": 2, "num_sets": 6},
        "prompts": {"source": "list", "items": PROMPTS, "num_eval": 6},
        "generation": {"max_new_tokens": 5, "eval_samples": 2},
        "rewards": [{"name": "regex_match", "pattern": "great|good"}],
        "train": {"batch": 3, "epochs": 2, "lr": 0.1, "eval_every": 0},
    }
    (tmp / "poly.yaml").write_text(yaml.safe_dump(config))
    code = main(["sweep", "--config-name", str(tmp / "poly.yaml"), "--name", "poly", "--no-progress", "--eval-gen",
                 "--n", "4", "--k", "all", "--verifier", "regex:great|good", "method.diversity_weight=0,1.0",
                 "seed=1,2"])
    assert code == 0
    root = tmp / "exp" / "model" / "list" / "polychromic"
    return tmp, root


def test_sweep_runs_every_combination_and_reports(sweep_runs, capsys):
    tmp, root = sweep_runs
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith("report"))
    assert names == ["poly-diversity_weight=0-seed=1", "poly-diversity_weight=0-seed=2",
                     "poly-diversity_weight=1.0-seed=1", "poly-diversity_weight=1.0-seed=2"]
    report = (root / "poly-report" / "report.md").read_text()
    assert "diversity_weight=0.0 (baseline)" in report and "| diversity_weight=1.0 |" in report
    assert "± " in report and "(n=2)" in report  # two seeds per variant
    assert "gen_pass@1" in report and "gen_self_bleu" in report and "%" in report
    for png in ("curves.png", "pass_at_k.png", "tradeoff.png"):
        assert (root / "poly-report" / png).stat().st_size > 1000
    assert "<table>" in (root / "poly-report" / "report.html").read_text()
    # a second sweep finds every run finished and only redoes the report
    before = (root / "poly-diversity_weight=0-seed=1" / "metrics.json").stat().st_mtime_ns
    assert main(["sweep", "--config-name", str(tmp / "poly.yaml"), "--name", "poly", "--no-progress",
                 "method.diversity_weight=0,1.0", "seed=1,2"]) == 0
    assert (root / "poly-diversity_weight=0-seed=1" / "metrics.json").stat().st_mtime_ns == before


def test_eval_gen_pass_at_k_from_its_own_generations(sweep_runs):
    _, root = sweep_runs
    out = root / "poly-diversity_weight=1.0-seed=1" / "eval_gen"
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert metrics["n"] == 4 and metrics["num_prompts"] == 6 and len(rows) == 24 and metrics["k"] == [1, 2, 3, 4]
    by_prompt: dict[int, list[bool]] = {}
    for r in rows:
        assert r["correct"] == bool(("great" in r["completion"]) or ("good" in r["completion"]))
        by_prompt.setdefault(r["index"], []).append(r["correct"])
    for k in (1, 2, 3, 4):
        expect = sum(pass_at_k(4, sum(c), k) for c in by_prompt.values()) / len(by_prompt)
        assert metrics[f"pass@{k}"] == pytest.approx(expect)
    assert 0 <= metrics["self_bleu"] <= 100 and 0 < metrics["set_distinct_2"] <= 1


def test_compare_and_eval_gen_refuse_bad_input(sweep_runs, tmp_path, capsys):
    tmp, root = sweep_runs
    a, b = root / "poly-diversity_weight=0-seed=1", root / "poly-diversity_weight=1.0-seed=1"
    # k greater than n
    assert main(["eval-gen", str(a), "--n", "4", "--k", "1,5"]) == 2
    assert "each k must be between 1 and --n (4)" in capsys.readouterr().err
    # a folder without metrics
    empty = tmp_path / "unfinished"
    empty.mkdir()
    (empty / "config.yaml").write_text((a / "config.yaml").read_text())
    assert main(["compare", str(a), str(empty)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    # runs of another task: refused unless --force
    other = tmp_path / "other"
    other.mkdir()
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["prompts"]["source"] = "review_openings"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    (other / "metrics.json").write_text((b / "metrics.json").read_text())
    assert main(["compare", str(a), str(other)]) == 2
    assert "different tasks" in capsys.readouterr().err
    assert main(["compare", str(a), str(other), "--force", "--out", str(tmp_path / "forced")]) == 0
    assert (tmp_path / "forced" / "report.md").exists()


def test_sweep_expands_comma_lists_but_not_quoted_or_yaml_values():
    from softprompt.commands.sweep import run_id_of
    from softprompt.config import expand_sweeps as expand  # the one sweep grammar

    overrides = ["method.diversity_weight=0,1.0", "seed=3", "'adapter.init=\"text:A, B\"'"[1:-1], "x=[1,2]"]
    combos = expand(overrides)
    assert len(combos) == 2 and combos[0][2] == 'adapter.init="text:A, B"' and combos[1][3] == "x=[1,2]"
    assert run_id_of("p", combos[1]) == "p-diversity_weight=1.0-seed=3"  # quoted and list values unnamed
    assert run_id_of("p", ["method.diversity_weight=0.3"]) == "p-diversity_weight=0.3"


def test_summary_signs_diversity_changes_and_quality_points(tmp_path):
    from pathlib import Path

    from softprompt.commands.compare import Run, Variant, summary

    def variant(name, **metrics):
        return Variant(name, [Run(Path(name), {}, {f"gen_{k}": v for k, v in metrics.items()})])

    base = variant("base", self_bleu=10.0, embedding_diversity=0.5, **{"pass@1": 0.90})
    more = variant("lambda=1", self_bleu=8.0, embedding_diversity=0.6, **{"pass@1": 0.89})
    (line,) = summary([base, more], base)
    assert "embedding_diversity +20.0%" in line and "self_bleu +20.0%" in line  # lower Self-BLEU: more diverse
    assert "pass@1 -1.0 pts" in line


def test_pass_at_k_curve_is_the_mean_and_std_over_seeds_of_every_measured_k():
    from pathlib import Path

    from softprompt.commands.compare import Run, Variant, pass_at_k_curve
    from softprompt.commands.eval_gen import parse_ks

    assert parse_ks("all", 4) == [1, 2, 3, 4] and parse_ks("5,1", 5) == [1, 5]
    a = Run(Path("a"), {}, {"gen_pass@1": 0.2, "gen_pass@2": 0.3, "gen_pass@4": 0.5})
    b = Run(Path("b"), {}, {"gen_pass@1": 0.4, "gen_pass@2": 0.5})
    curve = pass_at_k_curve(Variant("v", [a, b]))
    assert [k for k, _, _ in curve] == [1, 2]  # k=4 was measured by one seed only
    assert curve[0][1] == pytest.approx(0.3) and curve[0][2] == pytest.approx(0.1414213, rel=1e-5)
