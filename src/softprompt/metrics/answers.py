"""Checking a generated answer against accepted ones (the verifiable tasks' reward and verifier)."""

from __future__ import annotations

from .diversity import normalise


def contains_answer(text: str, answers) -> bool:
    """Whether one of ``answers`` (a string or a list) occurs in ``text`` as whole words, both
    normalised (lower case, punctuation to spaces: "Port-au-Prince" matches "port au prince")."""
    padded = f" {normalise(text)} "
    return any(f" {normalise(str(a))} " in padded for a in ([answers] if isinstance(answers, str) else answers)
               if normalise(str(a)))
