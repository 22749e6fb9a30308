"""PPO's stabilisers (trlx / TRL / CleanRL names): each one's arithmetic by hand, and that it
reaches training: adaptive KL, running reward scale and clip, value warm-up, entropy bonus,
minibatches, and their state across a resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import save_backbone, tiny_llama
from helpers import fit_until_killed

from softprompt.errors import ConfigError
from softprompt.experiment import from_dict
from softprompt.modeling.generation import policy_entropy
from softprompt.objectives.ppo import PPO, PPOConfig, SingleStepPPO, SingleStepPPOConfig
from softprompt.objectives.ppo_control import AdaptiveKL, RunningMoments, scale_scores

# -- the controllers by hand ----------------------------------------------------------------------


def test_adaptive_kl_moves_beta_by_the_clipped_proportional_error():
    kl = AdaptiveKL(beta=0.1, target=6.0, horizon=100)
    kl.update(9.0, n=16)  # 9 / 6 - 1 = 0.5, clipped to 0.2: beta * (1 + 0.2 * 16 / 100)
    assert kl.value == pytest.approx(0.1 * 1.032)
    kl.update(5.4, n=10)  # 5.4 / 6 - 1 = -0.1: beta * (1 - 0.1 * 10 / 100)
    assert kl.value == pytest.approx(0.1 * 1.032 * 0.99)
    kl.update(float("nan"), n=10)  # a rollout without a finite KL leaves it
    assert kl.value == pytest.approx(0.1 * 1.032 * 0.99)
    other = AdaptiveKL(1.0, 6.0, 100)
    other.load_state_dict(kl.state_dict())
    assert other.value == kl.value


def test_running_moments_merge_batches_into_the_moments_of_all():
    moments = RunningMoments()
    assert moments.std == 1.0  # nothing seen yet: no scaling
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([-3.0, 0.5, float("nan"), 7.0])
    moments.update(a)
    moments.update(b)
    seen = torch.tensor([1.0, 2.0, 4.0, -3.0, 0.5, 7.0], dtype=torch.float64)
    assert moments.count == 6
    assert moments.mean == pytest.approx(float(seen.mean()))
    assert moments.std == pytest.approx(float(seen.std(unbiased=False)))


def test_scores_are_divided_by_the_running_std_then_clipped():
    moments = RunningMoments()
    scores = torch.tensor([2.0, -2.0, 6.0, float("nan")])
    out = scale_scores(scores, moments, clip=1.5)
    std = float(torch.tensor([2.0, -2.0, 6.0], dtype=torch.float64).std(unbiased=False))  # the batch is merged first
    torch.testing.assert_close(out[:3], torch.tensor([2 / std, -2 / std, 1.5]))
    assert math.isnan(out[3])  # an invalid row stays invalid
    torch.testing.assert_close(scale_scores(torch.tensor([3.0, -9.0]), None, 0.0), torch.tensor([3.0, -9.0]))


def test_adaptive_kl_needs_a_beta_to_start_from():
    with pytest.raises(ConfigError, match="'method.adaptive_kl'=true needs 'method.beta' > 0"):
        PPOConfig(adaptive_kl=True, beta=0.0)


# -- the objectives ---------------------------------------------------------------------------------


def _rollout(rewards=(1.0, 0.0)):
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return SimpleNamespace(rewards=torch.tensor(rewards), valid=torch.tensor([True, True]), mask=mask,
                           old_logprobs=torch.tensor([[-1.0, -1.0], [-2.0, 0.0]]),
                           ref_logprobs=torch.tensor([[-1.5, -1.0], [-2.5, 0.0]]),
                           old_values=torch.tensor([[0.5, 0.2], [0.2, 0.0]]), memo={},
                           is_weights=None, sequence_is_weights=None)  # sampled natively: no engine weights


def _inputs(ro, step=0, entropy=None):
    logp = (ro.old_logprobs + 0.1).requires_grad_(True)
    values = ro.old_values.clone().requires_grad_(True)
    return SimpleNamespace(rollout=ro, step=step, logprobs_and_values=lambda: (logp, values),
                           entropy=lambda: entropy), logp, values


def test_adaptive_beta_prices_the_next_rollouts_kl():
    """The KL per sequence of this rollout is (0.5 + 0) and (0.5): 0.5 < target 1, so beta shrinks by
    (1 + clip(0.5 - 1) * 2 / 10) = 0.96, and the next rollout's token rewards use the new beta."""
    obj = PPO(PPOConfig(beta=0.1, adaptive_kl=True, target=1.0, horizon=10, whiten_advantages=False))
    first = _rollout()
    obj(_inputs(first)[0])
    assert first.memo["beta"] == pytest.approx(0.1) and first.memo["kl_per_sequence"] == pytest.approx(0.5)
    assert obj.beta == pytest.approx(0.1 * 0.96)
    second = _rollout()
    obj(_inputs(second)[0])
    assert second.memo["beta"] == pytest.approx(0.096)
    # GAE with gamma 1, lam 0.95 on row 0: r = (-0.096 * 0.5, 1 - 0): the returns of the last token are 1
    assert second.memo["returns"][0, 1].item() == pytest.approx(1.0)
    fixed = PPO(PPOConfig(beta=0.1, whiten_advantages=False))
    fixed(_inputs(_rollout())[0])
    assert fixed.beta == 0.1  # adaptive_kl off: beta stays


def test_kl_in_the_loss_leaves_the_rewards_and_adds_beta_times_the_k3_kl():
    """kl_penalty=loss: the returns hold the score alone, and the loss gains beta * the token mean of
    k3(logp, ref) = exp(ref - logp) - (ref - logp) - 1 of the current log-probs (old + 0.1 here)."""
    in_loss = PPO(PPOConfig(beta=0.2, kl_penalty="loss", whiten_advantages=False, vf_coef=0.0))
    no_kl = PPO(PPOConfig(beta=0.0, whiten_advantages=False, vf_coef=0.0))
    ro, plain = _rollout(), _rollout()
    inputs, logp, _ = _inputs(ro)
    out = in_loss(inputs)
    loss = out.loss
    base = no_kl(_inputs(plain)[0]).loss
    torch.testing.assert_close(ro.memo["returns"], plain.memo["returns"])  # no KL in the rewards
    d = torch.tensor([[-1.5 - (-0.9), -1.0 - (-0.9)], [-2.5 - (-1.9), 0.0]])  # ref - logp, on the mask
    k3 = (d.exp() - d - 1) * ro.mask
    assert (loss - base).item() == pytest.approx(0.2 * float(k3.sum() / ro.mask.sum()), rel=1e-5)
    assert out.metrics["kl_loss"] == pytest.approx(float(k3.sum() / ro.mask.sum()), rel=1e-5)
    assert out.metrics["policy_loss"] == pytest.approx(base.item())  # the clipped surrogate alone (vf_coef 0)
    loss.backward()
    plain_inputs, plain_logp, _ = _inputs(_rollout())
    no_kl(plain_inputs).loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp): positive where the policy is above the reference, so a
    # step down the loss lowers those log-probs toward the reference's
    torch.testing.assert_close(logp.grad - plain_logp.grad, 0.2 * (1 - d.exp()) * ro.mask / ro.mask.sum())
    in_reward = PPO(PPOConfig(beta=0.2, whiten_advantages=False))
    folded = _rollout()
    in_reward(_inputs(folded)[0])
    assert not torch.allclose(folded.memo["returns"], plain.memo["returns"])  # trlx's default folds it in


@pytest.mark.parametrize("objective,config", [(PPO, PPOConfig), (SingleStepPPO, SingleStepPPOConfig)])
def test_value_warmup_trains_only_the_value_head(objective, config):
    obj = objective(config(beta=0.1, vf_warmup_steps=3))
    for step, policy_moves in ((2, False), (3, True)):
        inputs, logp, values = _inputs(_rollout(), step=step)
        obj(inputs).loss.backward()
        assert values.grad.abs().sum() > 0
        assert (logp.grad.abs().sum() > 0) == policy_moves, step


def test_reward_scale_and_clip_reach_the_returns():
    obj = SingleStepPPO(SingleStepPPOConfig(scale_reward="running", cliprange_reward=0.8, whiten_advantages=False))
    ro = _rollout(rewards=(3.0, -1.0))
    obj(_inputs(ro)[0])
    # running std of (3, -1) is 2: scores 1.5 -> clipped 0.8, and -0.5; beta 0, so the returns are those
    torch.testing.assert_close(ro.memo["returns"], torch.tensor([0.8, -0.5]))
    assert obj.state_dict()["moments"]["count"] == 2


def test_entropy_bonus_is_the_policys_entropy_and_its_gradient_raises_it():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]], requires_grad=True)
    p = torch.softmax(logits / 0.7, -1)
    torch.testing.assert_close(policy_entropy(logits, temperature=0.7), -(p * p.log()).sum(-1))
    # top-k 2: the entropy of the renormalised two best tokens (the third has probability 0)
    q = torch.softmax(logits.detach()[0, 0, :2], -1)
    assert float(policy_entropy(logits.detach(), top_k=2)[0, 0]) == pytest.approx(float(-(q * q.log()).sum()))
    obj = PPO(PPOConfig(beta=0.0, entropy_coef=0.5, whiten_advantages=False))
    ro = _rollout()
    entropy = policy_entropy(logits, 1.0).expand(2, 2)
    inputs, _, _ = _inputs(ro, entropy=entropy)
    out = obj(inputs)
    assert out.metrics["entropy"] == pytest.approx(float((entropy.detach() * ro.mask).sum() / ro.mask.sum()))
    out.loss.backward()
    with torch.no_grad():  # a step down the loss raises the entropy
        higher = policy_entropy(logits - 0.1 * logits.grad, 1.0)
    assert float(higher.sum()) > float(policy_entropy(logits.detach(), 1.0).sum())


# -- in training ----------------------------------------------------------------------------------

PROMPTS = ["the movie was", "i loved it and", "this plot is", "a story with", "the actors were", "it is not"]


def _config(tmp_path, model, run_id, **method):
    return from_dict({
        "model": str(model), "output_dir": str(tmp_path / "runs"), "seed": 0, "run_id": run_id,
        "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "random", "init_seed": 0},
        "method": {"name": "ppo", "group_size": 1, **method},
        "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2},
        "rewards": [{"name": "regex_match", "pattern": "great"}, {"name": "length", "weight": 0.05}],
        "generation": {"max_new_tokens": 5, "temperature": 1.0, "eval_samples": 1},
        "train": {"batch": 4, "epochs": 2, "lr": 0.1, "warmup_ratio": 0.0, "scheduler": "constant",
                  "eval_every": 0}})


@pytest.fixture
def model_dir(tmp_path):
    return save_backbone(tiny_llama(vocab_size=50), tmp_path / "model")


def test_minibatches_are_optimizer_steps_over_slices_of_the_rollouts_advantages(tmp_path, model_dir):
    from softprompt.training.assemble import make_trainer

    trainer = make_trainer(_config(tmp_path, model_dir, "mb", num_mini_batches=2, num_iterations=2,
                                   entropy_coef=0.01), progress=False)
    seen = []
    ppo = trainer.objectives["ppo"]
    original = ppo.__call__

    def record(inputs):
        seen.append((len(inputs.rollout.examples), inputs.rollout.memo["advantages"].clone()))
        return original(inputs)
    trainer.objectives["ppo"] = _Wrap(ppo, record)
    result = trainer.fit(progress=False)
    # 6 prompts, batch 4: batches of 4 and 2 prompts, 2 passes x 2 minibatches each: 8 steps an epoch
    assert trainer.steps_per_epoch == 8 and result["global_step"] == 16
    assert [n for n, _ in seen[:4]] == [2, 2, 2, 2] and [n for n, _ in seen[4:8]] == [1, 1, 1, 1]
    # the two minibatches of a pass hold the two halves of the advantages whitened over the rollout
    whole = torch.cat([seen[0][1], seen[1][1]])
    m = whole != 0
    assert abs(float(whole[m].mean())) < 1e-5 and float(whole[m].std()) == pytest.approx(1.0, abs=1e-3)
    log = trainer.run.read_jsonl("train_log.jsonl")
    assert all("ppo/entropy" in row for row in log)


class _Wrap:
    """The trainer's objective with its call recorded."""

    def __init__(self, inner, call):
        self.inner, self.call = inner, call

    def __call__(self, inputs):
        return self.call(inputs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_minibatches_above_the_batch_are_refused(tmp_path, model_dir):
    from softprompt.training.assemble import make_trainer

    with pytest.raises(ConfigError, match="num_mini_batches=5 exceeds train.batch=4"):
        make_trainer(_config(tmp_path, model_dir, "x", num_mini_batches=5), progress=False)


def test_resume_continues_the_adaptive_beta_and_the_reward_scale(tmp_path, model_dir):
    from softprompt.training.assemble import make_trainer

    knobs = dict(kl_coef=0.2, adaptive_kl=True, target=0.01, horizon=20, scale_reward="running",
                 cliprange_reward=3.0)
    full = make_trainer(_config(tmp_path, model_dir, "full", **knobs), progress=False)
    expected = full.fit(progress=False)
    assert full.objectives["ppo"].beta != pytest.approx(0.2)  # it adapted
    cut = make_trainer(_config(tmp_path, model_dir, "cut", **knobs), progress=False)
    fit_until_killed(cut, epoch=1)
    resumed = make_trainer(_config(tmp_path, model_dir, "cut", **knobs), resume=cut.run.path, progress=False)
    assert resumed.objectives["ppo"].beta == pytest.approx(cut.objectives["ppo"].beta)
    got = resumed.fit(progress=False)
    assert resumed.objectives["ppo"].beta == pytest.approx(full.objectives["ppo"].beta)
    assert resumed.objectives["ppo"].moments.count == full.objectives["ppo"].moments.count
    assert got["eval_reward"] == pytest.approx(expected["eval_reward"], abs=1e-6)
