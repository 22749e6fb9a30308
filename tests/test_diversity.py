"""Diversity and Pass@k metrics on tiny hand-made sets."""

from __future__ import annotations

import math
import random

import pytest
import sacrebleu
import torch

from softprompt.errors import ConfigError
from softprompt.metrics.diversity import (
    distinct_n,
    distinct_samples,
    embedding_diversity,
    pass_at_k,
    self_bleu,
    set_metrics,
    unique_words,
)


def test_distinct_and_word_counts_by_hand():
    texts = ["the film was great", "The film was bad", "great great"]
    # bigrams: the film, film was, was great | the film, film was, was bad | great great
    # -> unique: the film, film was, was great, was bad, great great = 5 of 7
    assert distinct_n(texts, 2) == pytest.approx(5 / 7)
    # unigrams: 10 words, unique: the film was great bad -> 5
    assert distinct_n(texts, 1) == pytest.approx(5 / 10)
    assert unique_words(texts) == pytest.approx(5 / 3)
    assert distinct_samples(["Great film!", "great  film", "a film"]) == pytest.approx(2 / 3)
    assert distinct_n([], 2) == 0.0 and distinct_n(["one"], 2) == 0.0


def test_self_bleu_equals_sacrebleu_sentence_bleu_against_the_others():
    random.seed(0)
    vocab = "the a film movie good bad great , . is was really not very fun boring".split()
    for _ in range(30):
        n = random.randint(2, 7)
        texts = [" ".join(random.choice(vocab) for _ in range(random.randint(0, 14))) for _ in range(n)]
        expect = sum(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)) / n
        assert self_bleu(texts) == pytest.approx(expect, abs=1e-9), texts
    assert self_bleu(["same words here", "same words here"]) == pytest.approx(100.0)
    assert self_bleu(["only one"]) == 0.0


def test_embedding_diversity_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # cosines: (0,1) 0, (0,2) 1/sqrt2, (1,2) 1/sqrt2 -> mean distance 1 - sqrt2/3
    assert embedding_diversity(e) == pytest.approx(1 - math.sqrt(2) / 3, abs=1e-6)
    assert embedding_diversity(e[:1]) == 0.0


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (10, 0, 3), (10, 10, 10), (100, 7, 10), (5, 4, 2)])
def test_pass_at_k_matches_the_closed_form(n, c, k):
    expect = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expect, abs=1e-12)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ConfigError, match="k=11 with n=10"):
        pass_at_k(10, 3, 11)
    with pytest.raises(ConfigError, match="c=12 correct of n=10"):
        pass_at_k(10, 12, 1)


def test_set_metrics_average_over_prompts():
    groups = [["a b", "a b"], ["a b", "c d"]]
    m = set_metrics(groups, embeddings=[torch.eye(2), torch.eye(2)])
    assert m["set_distinct_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["distinct_samples"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["embedding_diversity"] == pytest.approx(1.0)
    assert m["self_bleu"] == pytest.approx((100.0 + 0.0) / 2)
