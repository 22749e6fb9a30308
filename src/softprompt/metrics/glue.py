"""Task metrics: each takes gold and predicted values and returns a dict of floats.

Degenerate inputs (constant predictions or gold, a single item) give 0.0 for a
correlation or MCC instead of NaN, and no warning escapes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..config.registry import Registry
from ..errors import DataError

MetricFn = Callable[[Sequence, Sequence], dict[str, float]]
METRICS: Registry[MetricFn] = Registry("metric")


def metric(name: str, keys: tuple[str, ...]) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn`` under ``name``; ``keys`` are the names of the values it returns."""

    def deco(fn: MetricFn) -> MetricFn:
        fn.keys = keys  # type: ignore[attr-defined]
        return METRICS.register(name)(fn)

    return deco


def _pair(gold, pred, dtype) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gold, dtype=dtype).reshape(-1)
    p = np.asarray(pred, dtype=dtype).reshape(-1)
    if len(g) != len(p):
        raise DataError(f"metric got {len(g)} gold values but {len(p)} predictions; expected as many of each")
    if len(g) == 0:
        raise DataError("metric got no examples; expected at least one gold value and prediction")
    return g, p


def _finite(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


@metric("accuracy", ("accuracy",))
def accuracy(gold, pred) -> dict[str, float]:
    g, p = _pair(gold, pred, np.int64)
    return {"accuracy": float(np.mean(g == p))}


@metric("matthews", ("mcc", "accuracy"))
def matthews(gold, pred) -> dict[str, float]:
    """Matthews correlation (CoLA) and accuracy; 0.0 when either side is constant."""
    from sklearn.metrics import matthews_corrcoef

    g, p = _pair(gold, pred, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcc = matthews_corrcoef(g, p)
    return {"mcc": _finite(mcc), "accuracy": float(np.mean(g == p))}


@metric("f1_accuracy", ("f1", "accuracy"))
def f1_accuracy(gold, pred) -> dict[str, float]:
    """F1 of the positive class 1 (MRPC) and accuracy; 0.0 when nothing is predicted or gold positive."""
    from sklearn.metrics import f1_score

    g, p = _pair(gold, pred, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = f1_score(g, p, pos_label=1, average="binary", labels=[0, 1], zero_division=0.0)
    return {"f1": _finite(f1), "accuracy": float(np.mean(g == p))}


@metric("pearson_spearman", ("pearson", "spearman", "corr"))
def pearson_spearman(gold, pred) -> dict[str, float]:
    """Pearson and Spearman correlation (STS-B) and their mean ``corr``; 0.0 when either side is constant."""
    from scipy.stats import pearsonr, spearmanr

    g, p = _pair(gold, pred, np.float64)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(p))):
        raise DataError("pearson_spearman got a NaN or infinite value; expected finite numbers")
    if len(g) < 2 or np.ptp(g) == 0 or np.ptp(p) == 0:
        pearson = spearman = 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pearson = _finite(pearsonr(g, p)[0])
            spearman = _finite(spearmanr(g, p)[0])
    return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}
