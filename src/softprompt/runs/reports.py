"""What a run leaves for people to look at: PNG curves and before/after sample tables."""

from __future__ import annotations

from pathlib import Path

from ..storage import atomic_write


def plot_curves(rows: list[dict], keys: list[str], path: Path, title: str = "", smooth: int = 5) -> Path | None:
    """One panel per key present in ``rows`` (x = step), raw and a running mean; None if nothing to plot."""
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, alpha=0.35, label=key)
        if len(ys) >= smooth:
            ax.plot(xs, running_mean(ys, smooth), label=f"mean of {smooth}")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def running_mean(ys: list[float], window: int = 5) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    return [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1]) for i in range(len(ys))]


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` atomically, close it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    pyplot().close(fig)
    return path


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def samples_table(before: list[dict], after: list[dict], path: Path, limit: int = 20) -> Path:
    """Markdown table: prompt, completion before and after training, and their rewards."""
    lines = ["| prompt | before | reward | after | reward |", "| --- | --- | ---: | --- | ---: |"]
    for b, a in list(zip(before, after))[:limit]:
        lines.append(f"| {_cell(b['prompt'])} | {_cell(b['completion'])} | {b['reward']:.3f} "
                     f"| {_cell(a['completion'])} | {a['reward']:.3f} |")
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return path
