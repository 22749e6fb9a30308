"""``softprompt compare``: a baseline and its variants side by side, for deciding what to keep.

Runs that differ only in ``seed`` are one *variant* (mean ± std over its seeds). Each variant
is named by the config keys that differ between the variants. The report (``report.md`` and
``report.html``) holds every final metric of ``metrics.json`` (``eval_*``) and of ``eval-gen``
(``gen_*``), each variant's change against the baseline in % (and in points for rates), PNG
training curves (reward, quality loss, diversity score, combined loss) and a
quality-diversity trade-off plot.
"""

from __future__ import annotations

import html
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import to_dict
from ..errors import SoftPromptError
from ..runs import RunFolder
from ..runs.reports import pyplot, running_mean, save_png
from ..storage import atomic_write

IGNORED_KEYS = {"seed", "run_id", "output_dir"}
LOWER_IS_BETTER = ("self_bleu", "perplexity", "loss")
RATE_MARKERS = ("pass@", "positive_rate", "accuracy", "distinct", "judge_score")
GEN_SETTINGS = ("n", "num_prompts", "max_new_tokens", "temperature", "embedded_per_set")  # eval-gen's settings, not results
SKIPPED = ("runtime", "samples_per_second", "steps_per_second", "seconds")
CURVES = {"reward": ["reward"], "quality loss": ["loss/response_mle", "loss/mle", "loss/grpo", "loss/polychromic"],
          "diversity score": ["polychromic/diversity_score"], "combined loss": ["loss"]}
QUALITY_KEYS = ("gen_pass@1", "gen_judge_positive_rate", "eval_judge_positive_rate", "gen_reward", "eval_reward")
DIVERSITY_KEYS = ("gen_embedding_diversity", "gen_set_distinct_2", "eval_set_distinct_2", "gen_distinct_2",
                  "eval_distinct_2")


@dataclass
class Run:
    path: Path
    config: dict
    metrics: dict[str, float]
    log: list[dict] = field(default_factory=list)

    @property
    def task(self) -> str:
        c = self.config
        prompts = c.get("prompts") or {}
        if (c.get("method") or {}).get("name") in ("mle", "ptcprl", None):
            return f"task:{(c.get('task') or {}).get('name')}"
        return f"prompts:{prompts.get('source')}:{prompts.get('file') or prompts.get('data_dir')}"


def load_run(path: str | Path) -> Run:
    p = Path(path)
    config = to_dict(RunFolder(p).read_config())  # older spellings read as today's keys
    if not (p / "metrics.json").exists():
        raise SoftPromptError(f"{p}: no metrics.json; the run has not finished (resume it with "
                              f"softprompt train --resume {p})")
    try:
        raw = json.loads((p / "metrics.json").read_text())
    except json.JSONDecodeError as e:
        raise SoftPromptError(f"{p}/metrics.json is not valid JSON ({e})") from None
    metrics = {k: float(v) for k, v in raw.items() if k.startswith("eval_") and _number(v) and not _skipped(k)}
    gen = p / "eval_gen" / "metrics.json"
    if gen.exists():
        metrics.update({f"gen_{k}": float(v) for k, v in json.loads(gen.read_text()).items()
                        if _number(v) and not _skipped(k) and k not in GEN_SETTINGS})

    return Run(p, config, metrics, RunFolder(p).read_jsonl("train_log.jsonl"))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _skipped(key: str) -> bool:
    return any(s in key for s in SKIPPED)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out


@dataclass
class Variant:
    name: str
    runs: list[Run]

    def values(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.runs if key in r.metrics]

    def mean(self, key: str) -> float | None:
        v = self.values(key)
        return statistics.fmean(v) if v else None


def group_variants(runs: list[Run]) -> list[Variant]:
    """Runs with the same config apart from seed / run_id / output_dir form one variant, in input order."""
    flats = [{k: v for k, v in _flat(r.config).items() if k not in IGNORED_KEYS} for r in runs]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({f.get(k) for f in flats}) > 1]
    variants: dict[str, Variant] = {}
    for run, flat in zip(runs, flats):
        name = ", ".join(f"{k.removeprefix('method.')}={json.loads(flat[k]) if k in flat else '-'}"
                         for k in differing) or run.path.name
        variants.setdefault(name, Variant(name, [])).runs.append(run)
    return list(variants.values())


def compare(paths: list[str | Path], baseline: str | Path | None = None, out: str | Path | None = None,
            force: bool = False) -> Path:
    """Write ``report.md``, ``report.html`` and the PNGs to ``out``; return ``out``."""
    if len(paths) < 2:
        raise SoftPromptError("compare needs at least two runs")
    runs = [load_run(p) for p in paths]
    tasks = {r.task for r in runs}
    if len(tasks) > 1 and not force:
        listed = "; ".join(f"{r.path}: {r.task}" for r in runs)
        raise SoftPromptError(f"these runs trained on different tasks ({listed}); their numbers are not comparable "
                              "(--force to compare anyway)")
    variants = group_variants(runs)
    base = variants[0]
    if baseline is not None:
        target = Path(baseline).resolve()
        found = [v for v in variants if any(r.path.resolve() == target for r in v.runs)]
        if not found:
            raise SoftPromptError(f"--baseline {baseline} is not one of the compared runs")
        base = found[0]
    out = Path(out) if out else _common_parent([r.path for r in runs]) / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in runs for k in r.metrics}, key=lambda k: (not k.startswith("gen_"), k))
    plots = [p for p in (_curves(variants, out / "curves.png"), _pass_at_k(variants, out / "pass_at_k.png"),
                         _tradeoff(variants, out / "tradeoff.png")) if p]
    rows = _table(variants, base, keys)
    _write_md(out / "report.md", variants, base, rows, plots)
    _write_html(out / "report.html", variants, base, rows, plots)
    return out


def _common_parent(paths: list[Path]) -> Path:
    parts = [p.resolve().parts for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return Path(*common) if common else Path(".")


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.4g}"
    return f"{m:.4g} ± {statistics.stdev(values):.2g} (n={len(values)})"


def delta(value: float | None, base: float | None, key: str) -> str:
    """'+12.3%' against the baseline (and '+1.5 pts' for rates in [0, 1]); arrows mark better/worse."""
    if value is None or base is None:
        return "-"
    if base == 0:
        text = "n/a" if value != 0 else "+0%"
    else:
        text = f"{(value - base) / abs(base) * 100:+.1f}%"
    if any(m in key for m in RATE_MARKERS) and 0 <= base <= 1 and 0 <= value <= 1:
        text += f" ({(value - base) * 100:+.1f} pts)"
    if value != base:
        better = (value < base) if any(m in key for m in LOWER_IS_BETTER) else (value > base)
        text += " ▲" if better else " ▼"
    return text


def _table(variants: list[Variant], base: Variant, keys: list[str]) -> list[list[str]]:
    rows = []
    for key in keys:
        row = [key]
        for v in variants:
            cell = _fmt(v.values(key))
            if v is not base:
                cell += f" [{delta(v.mean(key), base.mean(key), key)}]"
            row.append(cell)
        rows.append(row)
    return rows


def _header(variants: list[Variant], base: Variant) -> list[str]:
    return ["metric"] + [f"{v.name}{' (baseline)' if v is base else ''}" for v in variants]


DIVERSITY_SUMMARY = ("embedding_diversity", "self_bleu", "set_distinct_2", "distinct_2", "unique_words")


def summary(variants: list[Variant], base: Variant) -> list[str]:
    """One line per variant: its diversity changes in % (sign: better is +) and its quality change in points."""
    lines = []
    for v in variants:
        if v is base:
            continue
        parts = []
        for name in DIVERSITY_SUMMARY:
            key = next((k for k in (f"gen_{name}", f"eval_{name}") if v.mean(k) is not None and base.mean(k)), None)
            if key:
                change = (v.mean(key) - base.mean(key)) / abs(base.mean(key)) * 100
                better = -change if name in LOWER_IS_BETTER else change
                parts.append(f"{name} {better + 0.0:+.1f}%")
        q = next((k for k in QUALITY_KEYS if v.mean(k) is not None and base.mean(k) is not None), None)
        quality = f"; {q.split('_', 1)[1]} {(v.mean(q) - base.mean(q)) * 100:+.1f} pts" if q else ""
        lines.append(f"- **{v.name}**: diversity (+ = more diverse) {', '.join(parts) or 'n/a'}{quality}")
    return lines


def _write_md(path: Path, variants, base, rows, plots) -> None:
    lines = [f"# Comparison against {base.name}", "", "## Summary", "", *summary(variants, base), "",
             "## Every metric", "",
             "Each cell: mean (± std over seeds when several), then [change against the baseline: %, points "
             "for rates; ▲ better, ▼ worse; lower is better for " + ", ".join(LOWER_IS_BETTER) + "].", "",
             "Runs:", ""]
    for v in variants:
        lines.append(f"- **{v.name}**: " + ", ".join(f"`{r.path}`" for r in v.runs))
    head = _header(variants, base)
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


def _write_html(path: Path, variants, base, rows, plots) -> None:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _header(variants, base))
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    runs = "".join(f"<li><b>{esc(v.name)}</b>: {esc(', '.join(str(r.path) for r in v.runs))}</li>" for v in variants)
    imgs = "".join(f'<p><img src="{esc(p.name)}" alt="{esc(p.stem)}"></p>' for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>softprompt compare</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
            f"</style></head><body><h1>Comparison against {esc(base.name)}</h1>"
            f"<h2>Summary</h2><ul>{''.join('<li>' + esc(x[2:]).replace('**', '') + '</li>' for x in summary(variants, base))}"
            f"</ul><h2>Every metric</h2><ul>{runs}</ul>"
            f"<table><tr>{head}</tr>{body}</table>{imgs}</body></html>")
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))


def _curves(variants: list[Variant], path: Path) -> Path | None:
    """One panel per curve; one line per variant (mean over its seeds, step by step)."""
    panels = []
    for title, candidates in CURVES.items():
        key = next((k for k in candidates if any(k in row for v in variants for r in v.runs for row in r.log)), None)
        if key:
            panels.append((title, key))
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), squeeze=False)
    for ax, (title, key) in zip(axes[:, 0], panels):
        for i, v in enumerate(variants):  # one colour per variant in every panel
            by_step: dict[int, list[float]] = {}
            for r in v.runs:
                for row in r.log:
                    if _number(row.get(key)):
                        by_step.setdefault(row["step"], []).append(row[key])
            steps = sorted(by_step)
            if steps:
                ys = [statistics.fmean(by_step[s]) for s in steps]
                ax.plot(steps, running_mean(ys), label=v.name, color=f"C{i}")
        ax.set_title(f"{title} ({key})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, path)


def pass_at_k_curve(variant: Variant) -> list[tuple[int, float, float]]:
    """(k, mean, std over seeds) of ``gen_pass@k`` for every k all of ``variant``'s runs measured."""
    ks = set.intersection(*({int(k.split("@")[1]) for k in r.metrics if k.startswith("gen_pass@")}
                            for r in variant.runs))
    out = []
    for k in sorted(ks):
        values = variant.values(f"gen_pass@{k}")
        out.append((k, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0))
    return out


def _pass_at_k(variants: list[Variant], path: Path) -> Path | None:
    """Pass@k against k, one line per variant (mean over its seeds, bars: std)."""
    curves = [(i, v, pass_at_k_curve(v)) for i, v in enumerate(variants)]
    if not any(len(c) > 1 for _, _, c in curves):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, v, curve in curves:
        if curve:
            ks, means, stds = zip(*curve)
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=v.name, color=f"C{i}")
    ax.xaxis.get_major_locator().set_params(integer=True)  # k is a count
    ax.set_xlabel("k (samples per request)")
    ax.set_ylabel("Pass@k (eval-gen)")
    ax.set_title("Pass@k per variant (mean over seeds; bars: std)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def _tradeoff(variants: list[Variant], path: Path) -> Path | None:
    runs = [r for v in variants for r in v.runs]
    x_key = next((k for k in DIVERSITY_KEYS if all(k in r.metrics for r in runs)), None)
    y_key = next((k for k in QUALITY_KEYS if all(k in r.metrics for r in runs)), None)
    if not x_key or not y_key:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, v in enumerate(variants):
        xs, ys = v.values(x_key), v.values(y_key)
        ax.scatter(xs, ys, alpha=0.4, color=f"C{i}")
        ax.scatter([statistics.fmean(xs)], [statistics.fmean(ys)], marker="*", s=180, color=f"C{i}", label=v.name)
    ax.set_xlabel(f"diversity: {x_key}")
    ax.set_ylabel(f"quality: {y_key}")
    ax.set_title("quality-diversity trade-off (stars: mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)
