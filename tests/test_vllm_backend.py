"""generation.backend: vllm without vLLM: the engine-mismatch arithmetic by hand, a rollout sampled by
another engine (a stand-in that shifts the log-probs it reports), and the refusals. The tests
against a real vLLM engine are in tests/on_vllm/, run in their own environment (tests/test_vllm_env.py)."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama
from helpers import assert_paths_agree, depth_and_width, fp32_path_tolerance, logprob_scale
from test_rl import rate_of_great, rl_config

from softprompt.errors import ConfigError
from softprompt.objectives.grpo import GRPOConfig, clipped_policy_loss
from softprompt.objectives.ppo import policy_loss
from softprompt.training.assemble import build_rl
from softprompt.training.rollout import engine_mismatch, make_rollout
from softprompt.training.trainer import Trainer


def test_engine_mismatch_and_truncated_weights_by_hand():
    trainer = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    engine = torch.log(torch.tensor([[0.25, 0.4, 0.1]]))
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding: it counts nowhere
    d, stats = engine_mismatch(trainer, engine, mask)
    torch.testing.assert_close(d, torch.tensor([[math.log(2), math.log(0.5), 0.0]]))
    assert stats["vllm/logprob_diff_mean"] == pytest.approx(math.log(2))
    assert stats["vllm/logprob_diff_max"] == pytest.approx(math.log(2))
    # k3 = e^d - d - 1: (2 - ln 2 - 1) and (0.5 + ln 2 - 1), mean 0.25
    assert stats["vllm/kl"] == pytest.approx(0.25)

    ro = SimpleNamespace(engine_log_ratio=d, is_cap=1.5, completion_mask=mask)
    from softprompt.training.rollout import Rollout
    torch.testing.assert_close(Rollout.is_weights.fget(ro), torch.tensor([[1.5, 0.5, 1.0]]))  # 2 truncated to 1.5
    torch.testing.assert_close(Rollout.sequence_is_weights.fget(ro), torch.tensor([1.0]))  # 2 * 0.5
    ro.is_cap = None  # the correction off: no weights
    assert Rollout.is_weights.fget(ro) is None and Rollout.sequence_is_weights.fget(ro) is None


def test_the_policy_losses_weight_each_term_by_the_truncated_ratio():
    logp = torch.zeros(2, 2, requires_grad=True)  # ratio 1: each token's term is -A
    mask = torch.tensor([[1, 1], [1, 0]])
    weights = torch.tensor([[2.0, 0.5], [1.0, 7.0]])
    ro = SimpleNamespace(old_logprobs=torch.zeros(2, 2), mask=mask, is_weights=weights, ref_logprobs=None,
                         max_new_tokens=2)
    out = clipped_policy_loss(SimpleNamespace(rollout=ro, logprobs=lambda: logp), torch.tensor([1.0, -3.0]),
                              GRPOConfig(loss_type="dapo"))
    # dapo: (-1 * 2 + -1 * 0.5 + 3 * 1) / 3 tokens
    assert out.loss.item() == pytest.approx((-2 - 0.5 + 3) / 3)
    pg, _ = policy_loss(logp, torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [-3.0, 0.0]]), mask, 0.2, None, weights)
    assert pg.item() == pytest.approx((-2 - 0.5 + 3) / 3)


class ShiftedEngine:
    """Stands in for a VLLMEngine: the model's own generation, reporting log-probs 0.1 too high."""

    def __init__(self, model):
        self.model, self.calls, self.closed = model, 0, False

    def close(self):
        self.closed = True

    def generate(self, prompts, config=None, condition=None, **kw):
        self.calls += 1
        out = self.model.generate(prompts, config, condition=condition, **kw)
        out.logprobs = (out.logprobs + 0.1) * out.completion_mask
        return out


def test_a_rollout_sampled_by_another_engine_takes_the_trainers_logprobs_as_old(tmp_path):
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 3})
    work, data = build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama())
    engine = ShiftedEngine(work.module.model)
    torch.manual_seed(0)
    ro = make_rollout(work.module, data.train[:4], work.gen, work.rewards, engine=engine, is_cap=2.0)
    assert engine.calls == 1
    with torch.no_grad():
        again = work.module.logprobs(ro)[0]
    mask = ro.completion_mask.bool()
    assert mask.sum() > 10
    assert torch.equal(ro.old_logprobs, again)  # the trainer's own pass (run again: the same numbers), not the engine's
    # the engine's log-probs minus its shift are generation's, which equal the trainer's up to the fp32 path bound
    trainer = ro.old_logprobs[mask]
    assert_paths_agree(trainer - ro.engine_log_ratio[mask] - 0.1, trainer, work.module.model)
    tol = fp32_path_tolerance(trainer, *depth_and_width(work.module.model))
    assert ro.engine_stats["vllm/logprob_diff_mean"] == pytest.approx(0.1, abs=tol)
    torch.testing.assert_close(ro.is_weights[mask], torch.full_like(trainer, math.exp(-0.1)), atol=tol, rtol=0)


def test_a_grpo_step_with_another_engine_logs_the_gap_and_moves_the_prompt(tmp_path):
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 4})
    cfg.train.epochs = 2
    words = lambda prompts, completions, examples: [float(len(c.split())) for c in completions]  # noqa: E731
    work, data = build_rl(cfg, rewards=[words], backbone=tiny_llama())  # varies within a group: A != 0
    cfg.generation.backend = "vllm"  # built natively; the stand-in engine is handed in after
    work.engine = ShiftedEngine(work.module.model)
    before = work.module.model.adapter.prompt_embeddings(1)[0].detach().clone()
    trainer = Trainer(cfg, work, data, run=None)
    logs = []
    trainer.on_step = logs.append
    trainer.fit(progress=False)
    assert work.engine.calls >= 2 and logs and work.engine.closed  # the trainer stops the engine when fit ends
    # each step's gap is the shift, up to the fp32 path bound of generation against the trainer's pass
    model = work.module.model
    enc = model.tokenizer([e.text for e in data.train], return_tensors="pt", padding=True)
    scale = logprob_scale(model, enc["input_ids"], enc["attention_mask"])
    tol = fp32_path_tolerance(torch.tensor(scale), *depth_and_width(model))
    assert all(row["vllm/logprob_diff_mean"] == pytest.approx(0.1, abs=tol) for row in logs)
    assert not torch.equal(work.module.model.adapter.prompt_embeddings(1)[0], before)


@pytest.mark.parametrize("adapter,why", [
    ({"type": "prefix_tuning", "num_virtual_tokens": 4}, "prefix tuning puts keys and values in every layer"),
    ({"type": "lora", "r": 2}, "LoRA changes the backbone's weights"),
])
def test_adapters_without_a_prompt_embeds_form_are_refused_in_one_line(tmp_path, adapter, why):
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 2}, adapter=adapter, generation={"backend": "vllm"})
    with pytest.raises(ConfigError, match=f"generation.backend=vllm: {why}.*generation.backend=native"):
        build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_vllm_backend_without_vllm_names_the_extra(tmp_path):
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 2}, generation={"backend": "vllm"})
    with pytest.raises(ConfigError, match=r"needs vLLM, which is not installed .*softprompt\[vllm\]"):
        build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama())
