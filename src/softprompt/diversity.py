"""Diversity metrics of a set of generated texts (DESIGN.md "Metrics")."""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams over the whole set (whitespace words, lower-cased); 0 if none."""
    grams = [tuple(w[i:i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
