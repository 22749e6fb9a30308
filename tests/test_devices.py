"""Every model of a run on the policy's device (docs/design.md, "Precision"): rewards, judges and
their models, sentence and condition encoders; a reward's own ``device`` key; CUDA RNG state in
checkpoints; chat template variables wherever a template is applied; the GPU smoke test's refusal
on a machine without a GPU.

No GPU here: device-following is checked by which device each component is asked for (the
loaders are replaced by recorders) and with the ``meta`` device, never by faking CUDA kernels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import WORDS, tiny_llama, tiny_tokenizer

from softprompt import SoftPromptModel
from softprompt.errors import ConfigError
from softprompt.experiment import from_dict
from softprompt.rewards import RewardContext, RewardSet
from softprompt.rewards.base import make_part

ROOT = Path(__file__).resolve().parents[1]
META = torch.device("meta")


def recorder(calls: list, result):
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result
    return record


# --------------------------------------------------------------------------- rewards


def test_reward_models_load_on_the_policys_device_in_its_dtype_or_on_their_own_device(monkeypatch):
    from softprompt.rewards import models

    calls: list = []
    monkeypatch.setattr(models, "load_backbone", recorder(calls, tiny_llama()))
    context = RewardContext(backbone=None, device=META, dtype=torch.bfloat16)
    make_part({"name": "perplexity", "model": "some-lm"}, 0, context)
    make_part({"name": "perplexity", "model": "some-lm", "device": "cpu"}, 1, context)
    assert [c[1] for c in calls] == [{"dtype": torch.bfloat16, "device": META},
                                     {"dtype": torch.bfloat16, "device": torch.device("cpu")}]

    calls.clear()
    task = SimpleNamespace(label_names=["negative", "positive"])
    clf = SimpleNamespace(eval=lambda: None)
    monkeypatch.setattr(models, "load_trained_classifier", recorder(calls, (clf, task, None)))
    make_part({"name": "classifier", "run": "a-run", "include_prompt": False}, 0, context)  # a reward
    make_part({"name": "classifier", "run": "a-run", "device": "cpu"}, 0, context)  # a judge is built alike
    assert [c[1]["device"] for c in calls] == [META, torch.device("cpu")]
    assert all(c[1]["dtype"] is torch.bfloat16 for c in calls)

    calls.clear()
    monkeypatch.setattr(models, "load_reward_model", recorder(calls, None))
    monkeypatch.setattr(models, "RunFolder", lambda path: SimpleNamespace(has_config=False))
    make_part({"name": "reward_model", "run": "a-run"}, 0, context)
    assert calls[0][1]["device"] == META and calls[0][1]["dtype"] is torch.bfloat16

    calls.clear()
    monkeypatch.setattr(models, "sentence_encoder", recorder(calls, None))
    make_part({"name": "embedding_cosine", "target_text": "good"}, 0, context)
    assert calls[0][0][1] == "meta"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_reward_device_must_exist():
    with pytest.raises(ConfigError, match=r"'rewards\[0\].device'='cuda:1': this machine has no CUDA device"):
        make_part({"name": "length", "device": "cuda:1"}, 0, RewardContext())
    with pytest.raises(ConfigError, match=r"'rewards\[0\].device'='gpu7': expected a device"):
        make_part({"name": "length", "device": "gpu7"}, 0, RewardContext())


def test_hf_sequence_classifier_reward_scores_on_its_device(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    tok = tiny_tokenizer("right")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_labels=2)
                                  ).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    rs = RewardSet.from_config([{"name": "classifier", "model": str(tmp_path / "clf"), "include_prompt": False}],
                               RewardContext(device="cpu", dtype=torch.bfloat16))
    fn = rs.parts[0].fn
    assert fn.hf.dtype is torch.bfloat16 and fn.hf.device.type == "cpu"
    total, _ = rs(["", ""], ["the movie was great", "awful plot"], [None, None])
    assert total.dtype is torch.float32 and ((total > 0) & (total < 1)).all()


# --------------------------------------------------------------------------- a run's models


def rl_raw(tmp_path, **extra):
    return {"model": {"name": "tiny", "dtype": "bfloat16"}, "output_dir": str(tmp_path), "seed": 0,
            "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 2, "init": "random", "init_seed": 0},
            "method": {"name": "ppo", "group_size": 2},
            "prompts": {"source": "list", "items": ["the movie was", "i loved it"], "num_eval": 1},
            "generation": {"max_new_tokens": 3}, **extra}


def test_build_rl_puts_rewards_judge_and_conditions_where_the_policy_is(tmp_path, monkeypatch):
    """The policy sits on the meta device here (its ``device`` reports meta): the reward context, the
    value head, the condition vectors and their encoder follow it; rewards get the backbone's dtype."""
    from softprompt.training import assemble

    loaded = []
    backbone = tiny_llama()
    backbone.model.to(torch.bfloat16)
    monkeypatch.setattr(assemble, "config_backbone", lambda config, device=None: loaded.append(device) or backbone)
    contexts = []

    def from_config(cls, section, context=None):
        contexts.append(context)
        return RewardSet.of(lambda p, c, e: [0.0] * len(c))
    monkeypatch.setattr(RewardSet, "from_config", classmethod(from_config))
    monkeypatch.setattr(SoftPromptModel, "device", property(lambda self: META))
    raw = rl_raw(tmp_path, adapter={"type": "conditional_prompt", "num_virtual_tokens": 2, "condition_dim": 2,
                                    "hidden_dim": 4, "init": "random"},
                 condition={"field": "condition", "encoder": "onehot", "values": ["negative", "positive"]},
                 rewards=[{"name": "length"}])
    raw["prompts"]["conditions"] = ["negative", "positive"]
    work, data = assemble.build_rl(from_dict(raw), device=torch.device("cpu"))
    assert loaded == [torch.device("cpu")]
    assert contexts[0].device == META and contexts[0].dtype is torch.bfloat16
    assert work.module.value_head.weight.device == META and work.module.value_head.weight.dtype is torch.float32
    assert work.conditioner.device == META and work.condition(data.train).device == META


def test_polychromic_embeds_the_samples_on_the_rollouts_device(monkeypatch):
    import softprompt.objectives.polychromic as poly

    calls = []

    def encode(texts, spec, device="cpu"):
        calls.append(device)
        return torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(0)),
                                             dim=-1)
    monkeypatch.setattr(poly, "encode", encode)
    objective = poly.Polychromic(poly.PolychromicConfig(num_generations=4, set_size=2, num_sets=6,
                                                        diversity_weight=1.0, diversity="embedding"))
    ro = SimpleNamespace(group_size=4, rewards=torch.rand(8), valid=torch.ones(8, dtype=torch.bool),
                         gen=SimpleNamespace(texts=[f"text {i}" for i in range(8)]),
                         completion_ids=torch.empty(8, 3, device=META))
    objective.advantages(ro, step=0)
    assert calls == ["meta"]


# --------------------------------------------------------------------------- CUDA RNG state


def test_checkpoints_keep_and_restore_every_cuda_generator(monkeypatch, caplog):
    from softprompt.training import checkpoint

    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new: restored.append([t.clone() for t in new]))
    saved = json.loads(json.dumps(checkpoint.rng_state()))  # what trainer_state.json holds
    assert saved["cuda"] == [s.tolist() for s in states]
    checkpoint.set_rng_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(restored[0], states)) and len(restored[0]) == 2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on a machine with fewer GPUs
    checkpoint.set_rng_state(saved)
    assert len(restored[1]) == 1 and torch.equal(restored[1][0], states[0])
    assert "RNG states of 2 CUDA devices, this machine has 1" in caplog.text


def test_without_cuda_the_checkpoint_holds_no_cuda_state_and_an_old_one_still_loads():
    from softprompt.training import checkpoint

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine saves its generators")
    state = checkpoint.rng_state()
    assert "cuda" not in state
    checkpoint.set_rng_state({**state, "cuda": [[0] * 16]})  # written on a GPU machine, resumed here


# --------------------------------------------------------------------------- chat templates


THINKING = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
            "{% if enable_thinking is defined and not enable_thinking %}not{% else %}very{% endif %}")


def chat_model() -> SoftPromptModel:
    backbone = tiny_llama()
    backbone.tokenizer.chat_template = THINKING
    return SoftPromptModel(backbone)


def last_prompt_word(model, out) -> str:
    return model.tokenizer.decode(out.prompt_ids[0, -1:])


def test_chat_template_kwargs_reach_the_template_from_the_config_and_the_api():
    assert "not" in WORDS and "very" in WORDS
    model = chat_model()
    plain = model.generate(["the movie was"], chat=True, max_new_tokens=1)
    assert last_prompt_word(model, plain) == "very"  # the template's default: thinking on
    cfg = from_dict({"generation": {"chat": True, "chat_template_kwargs": {"enable_thinking": False}}})
    gen = cfg.generation.to_generation_config(group_size=2)
    assert gen.chat_template_kwargs == {"enable_thinking": False}
    out = model.generate(["the movie was"], gen, max_new_tokens=1)
    assert last_prompt_word(model, out) == "not"
    captured = []
    original = model.generate
    model.generate = lambda prompts, config=None, **kw: captured.append(kw) or original(prompts, config, **kw)
    model.generate_response("the movie was", temperature=0.0, max_new_tokens=1,
                            chat_template_kwargs={"enable_thinking": False})
    assert captured[0]["chat_template_kwargs"] == {"enable_thinking": False}


def test_rl_rollouts_apply_the_configs_chat_template_kwargs(tmp_path):
    from softprompt.training.assemble import build_rl
    from softprompt.training.rollout import make_rollout

    backbone = tiny_llama()
    backbone.tokenizer.chat_template = THINKING
    raw = rl_raw(tmp_path, generation={"max_new_tokens": 2, "chat": True,
                                       "chat_template_kwargs": {"enable_thinking": False}})
    raw["model"]["dtype"] = "float32"
    work, data = build_rl(from_dict(raw), rewards=[lambda p, c, e: [0.0] * len(c)], backbone=backbone)
    ro = make_rollout(work.module, data.train[:1], work.gen, work.rewards)
    assert backbone.tokenizer.decode(ro.gen.prompt_ids[0, -1:]) == "not"


# --------------------------------------------------------------------------- the GPU smoke test


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs the experiments")
def test_gpu_smoke_refuses_a_machine_without_a_gpu(tmp_path):
    out = tmp_path / "gpu_smoke.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_smoke.sh"), "--out", str(out)], capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "gpu_smoke: no CUDA GPU on this machine" in done.stderr
    assert not out.exists()
