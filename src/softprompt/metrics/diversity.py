"""Diversity and Pass@k metrics of generated texts (docs/design.md "Metrics").

A *set* is the n samples of one prompt; the set metrics below are computed per set and
averaged over prompts by ``set_metrics`` (``set_distinct_n``; ``distinct_n`` of all completions
of all prompts together is the corpus-level figure). Words are whitespace tokens, lower-cased.

    distinct_n        unique n-grams / all n-grams over the set
    self_bleu         mean over samples of sacrebleu's sentence BLEU (0..100) of the sample
                      against the others of its set (lower = more diverse)
    embedding_div     mean pairwise (1 - cosine) of sentence embeddings over the set
    unique_words      distinct words of the set / samples in it (average unique words per sample)
    distinct_samples  distinct samples after normalisation / samples (the polychromic diversity)
    pass@k            1 - C(n - c, k) / C(n, k) for c correct of n samples (Chen et al., 2021)
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError
from ..modeling.embeddings import encode, sentence_encoder  # noqa: F401  (sentence_encoder: re-exported)

_PUNCT = re.compile(r"[^\w\s]")


def _words(text: str) -> list[str]:
    return text.lower().split()


def normalise(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace: two samples are the same if this is."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams over the whole set (whitespace words, lower-cased); 0 if none."""
    grams = [tuple(w[i:i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_samples(texts: Sequence[str]) -> float:
    """Fraction of distinct samples after ``normalise`` (1/n when all are the same)."""
    return len({normalise(t) for t in texts}) / len(texts) if texts else 0.0


def unique_words(texts: Sequence[str]) -> float:
    """Distinct words over the set divided by the number of samples."""
    return len({w for t in texts for w in _words(t)}) / len(texts) if texts else 0.0


@functools.lru_cache(maxsize=4)
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=True)


def self_bleu(texts: Sequence[str], tokenize: str = "13a") -> float:
    """Mean sentence BLEU (sacrebleu, 0..100) of each sample against all the others of the set.

    Exactly ``mean(sacrebleu.sentence_bleu(t_i, texts[:i] + texts[i+1:]).score)``, computed in one
    pass: each sample's n-grams are counted once, and the multi-reference clip count "max over
    the other samples" is read from each n-gram's two largest counts in the set. O(total
    n-grams) instead of O(n^2): 100 samples cost 100 counts, not 9,900.
    """
    if len(texts) < 2:
        return 0.0
    bleu = _bleu(tokenize)
    order = bleu.max_ngram_order
    counted = [_ngrams(bleu._preprocess_segment(t), order) for t in texts]
    top: dict[tuple, list] = {}  # n-gram -> [largest count, who has it, second largest]
    for i, (grams, _) in enumerate(counted):
        for g, c in grams.items():
            best = top.get(g)
            if best is None:
                top[g] = [c, i, 0]
            elif c > best[0]:
                top[g] = [c, i, best[0]]
            elif c > best[2]:
                best[2] = c
    lengths = [n for _, n in counted]
    scores = []
    for i, (grams, hyp_len) in enumerate(counted):
        correct, total = [0] * order, [0] * order
        for g, c in grams.items():
            k = len(g) - 1
            total[k] += c
            best = top[g]
            ref = best[2] if best[1] == i else best[0]
            correct[k] += min(c, ref)
        ref_len = _closest(hyp_len, lengths[:i] + lengths[i + 1:])
        scores.append(bleu.compute_bleu(correct, total, hyp_len, ref_len, smooth_method=bleu.smooth_method,
                                        smooth_value=bleu.smooth_value, effective_order=True,
                                        max_ngram_order=order).score)
    return sum(scores) / len(scores)


def _ngrams(line: str, order: int) -> tuple[Counter, int]:
    tokens = line.split()
    return Counter(tuple(tokens[i:i + n]) for n in range(1, order + 1) for i in range(len(tokens) - n + 1)), len(tokens)


def _closest(hyp_len: int, ref_lens: list[int]) -> int:
    """sacrebleu's choice of reference length: the closest, the shorter on a tie."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def embedding_diversity(embeddings: torch.Tensor) -> float:
    """Mean pairwise cosine distance (1 - cos) over the rows of ``embeddings`` (n, d); 0 if n < 2."""
    if embeddings.shape[0] < 2:
        return 0.0
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return mean_cosine_distance(e @ e.T)


def mean_cosine_distance(sim: torch.Tensor, quality: torch.Tensor | None = None) -> float:
    """Mean of 1 - cos over the distinct pairs of a cosine-similarity matrix (n, n). With ``quality``
    (one weight >= 0 per row) pair (i, j) weighs q_i * q_j; 0 when no pair has weight."""
    n = len(sim)
    off = ~torch.eye(n, dtype=torch.bool)
    w = torch.ones(n, n) if quality is None else quality[:, None] * quality[None, :]
    total = w[off].sum()
    return float((w * (1 - sim))[off].sum() / total) if total > 0 else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ConfigError(f"pass@k: c={c} correct of n={n} samples: expected 0 <= c <= n")
    if not 1 <= k <= n:
        raise ConfigError(f"pass@k: k={k} with n={n} samples per prompt: expected 1 <= k <= n")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i): no huge binomials
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def encode_groups(groups: Sequence[Sequence[str]], spec: str = "minilm-l6", max_per_set: int | None = None,
                  seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """Sentence embeddings of each group's texts, for embedding diversity.

    ``max_per_set``: embed a seeded uniform sample of at most this many texts per group. The mean
    pairwise distance over a uniform sample is an unbiased estimate of the whole set's, and
    encoding is what costs (about 9 ms a 32-word text on 2 CPU cores).
    """
    import random

    rng = random.Random(seed)
    chosen = [list(g) if not max_per_set or len(g) <= max_per_set else rng.sample(list(g), max_per_set)
              for g in groups]
    flat = encode([t for g in chosen for t in g], spec, device) if any(chosen) else torch.zeros(0, 1)
    out, start = [], 0
    for g in chosen:
        out.append(flat[start:start + len(g)])
        start += len(g)
    return out


SET_METRICS = ("set_distinct_1", "set_distinct_2", "self_bleu", "embedding_diversity", "unique_words", "distinct_samples")


def set_metrics(groups: Sequence[Sequence[str]], embeddings: Sequence[torch.Tensor] | None = None,
                timings: dict | None = None) -> dict[str, float]:
    """Each set metric averaged over the groups (one group = the samples of one prompt).

    ``embeddings``: one (n, d) tensor per group for embedding diversity (left out when None).
    ``timings``: filled with seconds per metric when given.
    """
    import time

    fns: dict[str, Callable[[Sequence[str]], float]] = {
        "set_distinct_1": lambda g: distinct_n(g, 1), "set_distinct_2": lambda g: distinct_n(g, 2),
        "self_bleu": self_bleu, "unique_words": unique_words, "distinct_samples": distinct_samples}
    out = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        out[name] = sum(fn(g) for g in groups) / max(1, len(groups))
        if timings is not None:
            timings[name] = time.perf_counter() - start
    if embeddings is not None:
        start = time.perf_counter()
        out["embedding_diversity"] = sum(embedding_diversity(e) for e in embeddings) / max(1, len(embeddings))
        if timings is not None:
            timings["embedding_diversity"] = timings.get("embedding_diversity", 0.0) + time.perf_counter() - start
    return {k: out[k] for k in SET_METRICS if k in out}
