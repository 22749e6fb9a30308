"""Polychromic RL: set advantages by hand, diversity reaching the gradient, lambda = 0 as the plain
objective, MLE on reference responses, and LoRA training only its own weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_llama
from test_rl import PROMPTS, assert_learns, rate_of_great, rl_config

from softprompt.errors import ConfigError, DataError
from softprompt.metrics.diversity import mean_cosine_distance
from softprompt.objectives.grpo import GRPO
from softprompt.objectives.polychromic import (
    Polychromic,
    PolychromicConfig,
    ResponseMLE,
    make_sets,
    polychromic_advantages,
    sample_advantages,
    set_scores,
)
from softprompt.training.assemble import build_rl
from softprompt.training.rollout import RLInputs, make_rollout

TEXTS = ["a", "A.", "b", "c"]  # samples 0 and 1 are the same after normalisation
REWARDS = torch.tensor([1.0, 0.0, 1.0, 0.0])


def hand_advantages(weight: float, mode: str = "multiplicative") -> torch.Tensor:
    config = PolychromicConfig(num_generations=4, set_size=2, num_sets=6, diversity_weight=weight, mode=mode,
                               scale_rewards="none")
    from softprompt.metrics.diversity import distinct_samples

    adv, _ = polychromic_advantages(REWARDS, torch.ones(4, dtype=torch.bool), 4, config,
                                    lambda b, idx: distinct_samples([TEXTS[i] for i in idx]), [True],
                                    torch.Generator().manual_seed(0))
    return adv


def test_polychromic_advantages_on_four_samples_by_hand():
    # sets (all 6 pairs): q = mean reward, d = distinct fraction: (0,1) is one sample twice -> d = 1/2
    # multiplicative f = q * d: (0,1) .25, (0,2) 1, (0,3) .5, (1,2) .5, (1,3) 0, (2,3) .5; mean 2.75/6
    m = 2.75 / 6
    expect = torch.tensor([(0.25 + 1 + 0.5) / 3 - m, (0.25 + 0.5 + 0) / 3 - m, (1 + 0.5 + 0.5) / 3 - m,
                           (0.5 + 0 + 0.5) / 3 - m])
    torch.testing.assert_close(hand_advantages(1.0), expect)
    # the duplicated sample 0 now ranks below sample 2, which has the same reward
    # additive f = q + d: 1, 2, 1.5, 1.5, 1, 1.5; mean 8.5/6
    m = 8.5 / 6
    torch.testing.assert_close(hand_advantages(1.0, "additive"),
                               torch.tensor([4.5 / 3 - m, 3.5 / 3 - m, 5 / 3 - m, 4 / 3 - m]))
    # lambda = 0: set means only; with every subset that is (N-n)/(n(N-1)) (r_i - mean r) = (r_i - 1/2) / 3
    torch.testing.assert_close(hand_advantages(0.0), (REWARDS - 0.5) / 3)
    # ... and scale=group divides by their std: GRPO's group-normalised advantages
    from softprompt.objectives.grpo import group_advantages

    config = PolychromicConfig(num_generations=4, set_size=2, num_sets=6, diversity_weight=0.0)
    adv, _ = polychromic_advantages(REWARDS, torch.ones(4, dtype=torch.bool), 4, config, None, [True],
                                    torch.Generator())
    torch.testing.assert_close(adv, group_advantages(REWARDS, torch.ones(4, dtype=torch.bool), 4, "group"),
                               atol=1e-3, rtol=0)


def test_sets_cover_samples_and_scores():
    assert make_sets(4, 2, 6, torch.Generator()) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    sets = make_sets(8, 4, 10, torch.Generator().manual_seed(0))  # C(8,4) = 70 > 10: random partitions
    assert len(sets) == 10 and all(len(set(s)) == 4 for s in sets)
    counts = torch.zeros(8)
    for s in sets[:8]:  # four whole partitions: every sample in exactly four sets
        counts[list(s)] += 1
    assert counts.tolist() == [4.0] * 8
    torch.testing.assert_close(set_scores([0.5, 1.0], [0.5, 1.0], 2.0, "multiplicative"), torch.tensor([0.125, 1.0]))
    # a sample in no set gets 0, not -mean
    torch.testing.assert_close(sample_advantages(3, [(0, 1)], torch.tensor([2.0])), torch.tensor([0.0, 0.0, 0.0]))


def _rollout(tmp_path, method: dict, texts_by_group=None):
    cfg = rl_config(tmp_path, method)
    torch.manual_seed(0)
    work, data = build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama(vocab_size=50))
    ro = make_rollout(work.module, data.train[:2], work.gen, work.rewards)
    if texts_by_group is not None:  # the diversity reads the texts: make samples 0 and 1 of each group equal
        ro.gen.texts = [t for _ in range(2) for t in texts_by_group]
    ro.rewards = torch.tensor([1.0, 0.0, 1.0, 0.0] * 2)
    ro.valid = torch.ones(8, dtype=torch.bool)
    return cfg, work, ro


def _grad(work, objective, ro) -> torch.Tensor:
    params = work.module.trainable_parameters()
    for p in params:
        p.grad = None
    objective(RLInputs(ro, work.module)).loss.backward()
    return torch.cat([p.grad.flatten() for p in params])


def test_diversity_reaches_the_gradient_and_lambda_zero_is_the_plain_objective(tmp_path):
    method = {"name": "polychromic", "n_generations": 4, "set_size": 2, "num_sets": 6, "scale": "none",
              "diversity_weight": 1.0, "diversity": "distinct"}
    cfg, work, ro = _rollout(tmp_path, method, TEXTS)
    with_div = _grad(work, Polychromic(cfg.method_config()), ro)
    ro.memo.clear()
    cfg0 = rl_config(tmp_path, {**method, "diversity_weight": 0.0})
    without = _grad(work, Polychromic(cfg0.method_config()), ro)
    assert with_div.abs().sum() > 0 and without.abs().sum() > 0
    assert (with_div - without).abs().max() > 1e-3 * without.abs().max()  # diversity moved the weights
    # lambda = 0 with every subset: GRPO's gradient (advantage r - mean r) times (N-n)/(n(N-1)) = 1/3
    ro.memo.clear()
    grpo = rl_config(tmp_path, {"name": "grpo", "group_size": 4, "scale_rewards": "none"})
    plain = _grad(work, GRPO(grpo.method_config()), ro)
    torch.testing.assert_close(without, plain / 3, atol=1e-6, rtol=1e-4)


def test_diversity_is_used_only_where_the_seed_knobs_say(tmp_path):
    method = {"name": "polychromic", "n_generations": 4, "set_size": 2, "num_sets": 6, "scale": "none",
              "diversity": "distinct"}
    cfg, work, ro = _rollout(tmp_path, {**method, "max_examples_for_diversity": 1, "compute_every_n_steps": 2},
                             TEXTS)
    objective = Polychromic(cfg.method_config())
    adv, metrics = objective.advantages(ro, step=0)
    torch.testing.assert_close(adv[:4], hand_advantages(1.0))  # prompt 0 uses diversity
    torch.testing.assert_close(adv[4:], hand_advantages(0.0))  # prompt 1 does not
    assert metrics["diversity_score"] == pytest.approx(5.5 / 6)
    adv, metrics = objective.advantages(ro, step=1)  # not a diversity step
    torch.testing.assert_close(adv, torch.cat([hand_advantages(0.0)] * 2))
    assert "diversity_score" not in metrics


def test_polychromic_raises_a_learnable_reward(tmp_path):
    assert_learns(tmp_path, {"name": "polychromic", "n_generations": 8, "set_size": 4, "num_sets": 16,
                             "diversity": "distinct"}, epochs=100)


def test_mle_on_reference_responses(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "response": "great fun"}) + "\n" for p in PROMPTS))
    cfg = rl_config(tmp_path, {"name": "polychromic", "n_generations": 2, "set_size": 2, "alpha": 0.5},
                    prompts={"source": "file", "file": str(prompts), "num_eval": 2})
    assert cfg.objectives().keys() == {"polychromic", "response_mle"}
    assert cfg.schedule().weights(0) == {"polychromic": 1.0, "response_mle": 0.5}
    work, data = build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama(vocab_size=50))
    ro = make_rollout(work.module, data.train[:2], work.gen, work.rewards)
    out = ResponseMLE(cfg.objectives()["response_mle"])(RLInputs(ro, work.module))
    # by hand: -mean log p("great", "fun", EOS | prompt) from the full forward pass's logits
    model, tok = work.module.model, work.module.model.tokenizer
    target = tok("great fun", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    nll = []
    for b in range(2):
        keep = ro.gen.prompt_mask[b].bool()
        ids = torch.cat([ro.gen.prompt_ids[b][keep], torch.tensor(target)])[None]
        logits = model(ids, torch.ones_like(ids)).logits[0, -len(target) - 1:-1]
        nll += (-torch.log_softmax(logits, -1)[torch.arange(len(target)), target]).tolist()
    assert out.loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in work.module.trainable_parameters())
    # a prompt without a response: a clear error before any model loads
    prompts.write_text(json.dumps({"prompt": "the movie was"}) + "\n" + json.dumps({"prompt": "it is"}) + "\n")
    with pytest.raises(DataError, match="prompt 0 .*'response'"):
        build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama())


def test_quality_weighted_embedding_diversity_by_hand(tmp_path, monkeypatch):
    sim = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.0, 0.9], [0.2, 0.9, 1.0]])
    assert mean_cosine_distance(sim) == pytest.approx((0.2 + 0.8 + 0.1) / 3)
    # w = r_i r_j = .5 (0,1), .5 (0,2), .25 (1,2): (.5 * .2 + .5 * .8 + .25 * .1) / 1.25
    assert mean_cosine_distance(sim, torch.tensor([1.0, 0.5, 0.5])) == pytest.approx(0.525 / 1.25)
    assert mean_cosine_distance(sim, torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(0.2)  # the poor sample is out
    assert mean_cosine_distance(sim, torch.zeros(3)) == 0.0

    # in the objective: sample 3 is an outlier (far from the rest) as poor as sample 1. Uniform diversity
    # credits it fully for the diversity it brings to its sets; weighted by quality its pairs count less
    method = {"name": "polychromic", "n_generations": 4, "set_size": 3, "num_sets": 4, "scale": "none",
              "diversity": "embedding", "diversity_weight": 1.0}
    sims = torch.tensor([[1.0, 0.9, 0.9, 0.0], [0.9, 1.0, 0.9, 0.0], [0.9, 0.9, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    monkeypatch.setattr(Polychromic, "_similarities", lambda self, texts, g, use, device="cpu": {b: sims for b in range(2)})
    cfg, work, ro = _rollout(tmp_path, method)
    ro.rewards = torch.tensor([1.0, 0.2, 1.0, 0.2] * 2)
    uniform = Polychromic(cfg.method_config()).advantages(ro, 0)[0]
    weighted = Polychromic(rl_config(tmp_path, {**method, "diversity_weighting": "quality"}).method_config())
    adv = weighted.advantages(ro, 0)[0]
    # sets (0,1,2) (0,1,3) (0,2,3) (1,2,3); q = mean r; d = weighted mean of the pairs' distances (.1 among
    # 0-2, 1 to sample 3) with w = r_i r_j
    q = torch.tensor([2.2, 1.4, 2.2, 1.4]) / 3
    d = torch.tensor([0.1, (0.2 * 0.1 + 0.2 * 1 + 0.04 * 1) / 0.44, (1 * 0.1 + 0.2 + 0.2) / 1.4,
                      (0.2 * 0.1 + 0.04 * 1 + 0.2 * 1) / 0.44])
    f = q * d
    member = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.float)
    torch.testing.assert_close(adv[:4], (member * f[:, None]).sum(0) / 3 - f.mean())
    assert adv[3] - adv[1] < 0.5 * (uniform[3] - uniform[1])  # the outlier's credit over sample 1 more than halves

    ro.rewards = torch.tensor([1.0, -0.5, 1.0, 0.2] * 2)  # a raw score outside [0, 1]: a clear error
    with pytest.raises(ConfigError, match=r"needs rewards in \[0, 1\], got -0.5 \(prompt 0, sample 1\).*sigmoid"):
        weighted.advantages(ro, 0)
    with pytest.raises(ConfigError, match="diversity_weighting='quality': expected uniform with diversity=distinct"):
        PolychromicConfig(diversity="distinct", diversity_weighting="quality")


def test_the_quality_weighted_config_resolves():
    from softprompt.experiment import resolve

    cfg = resolve("polychromic_fpoly_quality")
    m = cfg.method_config()
    assert (m.mode, m.normalize, m.diversity, m.diversity_weighting, m.diversity_weight) == (
        "multiplicative", False, "embedding", "quality", 1.0)
    assert cfg.rewards[0]["transform"] == "sigmoid"  # rewards in [0, 1], as the weighting needs


def test_bad_polychromic_config():
    with pytest.raises(ConfigError, match="set_size=5: expected <= num_generations"):
        PolychromicConfig(num_generations=4, set_size=5)
    with pytest.raises(ConfigError, match=r"'method.diversity_weight'=-1: expected a number >= 0"):
        PolychromicConfig(diversity_weight=-1)
    with pytest.raises(ConfigError, match=r"'method.num_generations'=1: expected an integer >= 2"):
        PolychromicConfig(num_generations=1, set_size=1)


@pytest.mark.parametrize("method", [{"name": "polychromic", "n_generations": 4, "set_size": 2},
                                    {"name": "grpo", "group_size": 4}])
def test_lora_policy_trains_only_lora_weights(tmp_path, method):
    from softprompt.training.trainer import Trainer

    cfg = rl_config(tmp_path, method, adapter={"type": "lora", "r": 2})
    cfg.train.epochs, cfg.train.lr = 3, 0.05
    backbone = tiny_llama(vocab_size=50)
    work, data = build_rl(cfg, rewards=[rate_of_great], backbone=backbone)
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}  # LoRA layers in place
    assert sum("lora_" in n for n in before) > 0
    Trainer(cfg, work, data, run=None).fit(progress=False)
    changed = {n for n, p in backbone.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed), changed
    assert any("lora_B" in n for n in changed)
    assert not math.isnan(work.evaluate_base(data.eval)["eval_reward"])  # LoRA switched off = the base model


def test_review_requests_share_their_eval_prompts_across_seeds():
    from softprompt.tasks.prompts import PromptsSection, load_prompts

    section = PromptsSection(source="review_requests", num_train=50, num_eval=10)
    (train1, eval1), (_, eval2) = load_prompts(section, 1), load_prompts(section, 2)
    assert [e.text for e in eval1] == [e.text for e in eval2]  # seeds of a sweep are measured alike
    assert not {e.text for e in eval1} & {e.text for e in train1}
    assert eval1[0].text.startswith("Write a one-line movie review of a") and "topic" in eval1[0].extra
    with pytest.raises(ConfigError, match="expected a text with {topic}"):
        load_prompts(PromptsSection(source="review_requests", template="Review it."), 0)


def test_normalized_additive_scores_weigh_z_scores():
    q, d = [1.0, 2.0, 3.0], [0.5, 0.5, 0.8]
    zq = torch.tensor([-1.0, 0.0, 1.0]) / (1.0 + 1e-4)
    dd = torch.tensor(d) - 0.6
    zd = dd / (dd.std() + 1e-4)
    torch.testing.assert_close(set_scores(q, d, 2.0, "additive", normalize=True), zq + 2.0 * zd)
    torch.testing.assert_close(set_scores(q, d, 2.0, "additive"), torch.tensor(q) + 2.0 * torch.tensor(d))


@pytest.mark.parametrize("kind", ["verbalizer", "embedding", "reward_model"])
def test_lora_trains_only_its_weights_in_every_workload(tmp_path, kind):
    """LoRA wherever a soft prompt trains: verbalizer and embedding classifiers, reward models."""
    from conftest import save_backbone, tiny_bert
    from test_reward_model import rm_config
    from test_trainer import config

    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    lora = {"type": "lora", "r": 2, "target_modules": ["all-linear"]}
    if kind == "reward_model":
        cfg = rm_config(tmp_path, save_backbone(tiny_bert(), tmp_path / "bert"), adapter=lora)
        cfg.train.epochs = 1
    else:
        model = save_backbone(tiny_llama() if kind == "verbalizer" else tiny_bert(), tmp_path / "model")
        raw = config(tmp_path, model, method={"name": "mle"}, train={"epochs": 1})
        raw["classifier"], raw["adapter"] = kind, lora
        cfg = from_dict(raw)
    trainer = make_trainer(cfg, progress=False)
    backbone = trainer.clf.model.model
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    assert any("lora_" in n for n in before)
    trainer.fit(progress=False)
    changed = {n for n, p in backbone.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    saved = trainer.run.checkpoints / "best" / "adapter.safetensors"
    from softprompt.storage import load_tensors

    assert all("lora_" in k for k in load_tensors(saved))  # the checkpoint holds the LoRA weights only
