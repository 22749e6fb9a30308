"""Precision (docs/design.md, "Precision"): ``model.dtype``, trained weights and optimizer state in
fp32 on a bf16 backbone, the generation equalities in bf16 within a bound argued from bf16's
rounding, old and new RL log-probs from one computation, and one training step of every method
in bf16 on the CPU (slow but correct on a CPU without native bf16)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CAUSAL_FAMILIES, save_backbone, tiny_bert, tiny_llama
from helpers import (
    bf16_path_tolerance,
    depth_and_width,
    encode,
    greedy_without_cache,
    logit_scale,
    poisoned_grad,
)

from softprompt import (
    ConditionalPromptConfig,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)
from softprompt.errors import ConfigError
from softprompt.experiment import ExperimentConfig, from_dict, resolve
from softprompt.modeling.backbones import load_backbone, unfreeze_top_layers
from softprompt.modeling.precision import cpu_features, resolve_dtype

BF16, FP32 = torch.bfloat16, torch.float32
TEXTS = ["the movie was", "i really loved it and the plot", "a boring film"]
ADAPTERS = {
    "prompt": PromptTuningConfig(num_virtual_tokens=5, init="random", init_seed=0),
    "prefix": PrefixTuningConfig(num_virtual_tokens=4, init="random", init_seed=0),
    "prefix_mlp": PrefixTuningConfig(num_virtual_tokens=4, reparameterize=True, encoder_hidden_size=16),
    "conditional": ConditionalPromptConfig(num_virtual_tokens=3, condition_dim=4, hidden_dim=8, init="random",
                                           init_seed=0),
    "lora": LoRAConfig(r=2),
}


def bf16_llama(seed: int = 0, vocab_size: int = 64):
    backbone = tiny_llama(seed, vocab_size)
    backbone.model.to(BF16)
    return backbone


def bf16_model(name: str, backbone=None) -> SoftPromptModel:
    model = SoftPromptModel.from_backbone(backbone or bf16_llama(), ADAPTERS[name])
    if name == "lora":  # B starts at 0: give the update a size, so that A gets a gradient too
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.normal_(0, 0.2)
    return model


def condition_for(name: str, rows: int):
    return torch.randn(rows, 4, generator=torch.Generator().manual_seed(0)) if name == "conditional" else None


# --------------------------------------------------------------------------- the machine and the key


def test_cpu_features_read_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile "
                    "amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    got = cpu_features(info)
    assert got["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
    assert got["bf16_native"] and got["model"] == "Test CPU"
    info.write_text("flags : fpu avx2 avx512f\n")  # AVX-512 without its bf16 instructions: emulated bf16
    got = cpu_features(info)
    assert got["flags"]["avx512f"] and not got["bf16_native"]
    assert not any(cpu_features(tmp_path / "absent")["flags"].values())
    assert cpu_features()["capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("name,dtype", [("float32", FP32), ("bfloat16", BF16), ("float16", torch.float16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name, "cpu") is dtype


def test_auto_is_bf16_where_the_device_computes_it_natively(monkeypatch):
    assert resolve_dtype("auto", "cpu", {"bf16_native": True}) is BF16
    assert resolve_dtype("auto", "cpu", {"bf16_native": False}) is FP32
    assert resolve_dtype("auto", "cpu") is (BF16 if cpu_features()["bf16_native"] else FP32)  # this machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") is BF16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert resolve_dtype("auto", "cuda:0") is FP32


def test_a_bad_dtype_is_a_one_line_error_naming_the_key():
    with pytest.raises(ConfigError, match="'model.dtype'='half': expected one of float32, bfloat16, float16, auto"):
        resolve_dtype("half", "cpu")
    with pytest.raises(ConfigError, match="'model.dtype'"):
        from_dict({"model": {"name": "tiny", "dtype": "half"}})


def test_model_is_a_section_and_a_plain_name_still_names_the_backbone(tmp_path):
    assert from_dict({"model": "tiny"}).model.name == "tiny"
    assert from_dict({"model": "tiny"}).model.dtype == "float32"  # the shipped configs keep fp32
    (tmp_path / "base.yaml").write_text("model:\n  name: a\n  dtype: bfloat16\n")
    (tmp_path / "child.yaml").write_text("defaults: base\nmodel: b\n")
    cfg = resolve(tmp_path / "child.yaml")
    assert (cfg.model.name, cfg.model.dtype) == ("b", "bfloat16")  # a child's name keeps the parent's dtype
    cfg = resolve(tmp_path / "base.yaml", ["model=c"])
    assert (cfg.model.name, cfg.model.dtype) == ("c", "bfloat16")
    cfg = resolve(tmp_path / "base.yaml", ["model=c", "model.name=d", "model.dtype=auto"])
    assert (cfg.model.name, cfg.model.dtype) == ("d", "auto")
    config = ExperimentConfig(model="e")  # Python, as before the section
    config.model = "f"
    assert config.model.name == "f"


def test_a_bf16_backbone_loads_in_bf16_and_its_run_folder_keeps_the_key(tmp_path):
    path = save_backbone(tiny_llama(), tmp_path / "model")
    backbone = load_backbone(str(path), dtype="bfloat16")
    assert backbone.model.get_input_embeddings().weight.dtype is BF16
    assert load_backbone(str(path), dtype="auto").model.dtype is resolve_dtype("auto", "cpu")


# --------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_adapters_on_a_bf16_backbone_keep_and_train_fp32_weights(name):
    model = bf16_model(name)
    assert model.compute_dtype is BF16
    params = model.trainable_parameters()
    assert params and all(p.dtype is FP32 for p in params)
    frozen = [p for p in model.model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype is BF16 for p in frozen)
    ids, mask = encode(model.tokenizer, TEXTS)
    logits = model(ids, mask, condition=condition_for(name, len(TEXTS))).logits
    assert logits.dtype is BF16 and torch.isfinite(logits).all()
    logits.float().log_softmax(-1)[..., 9].mean().backward()
    for p in params:  # the gradient flows back through the cast into every fp32 weight
        assert p.grad is not None and p.grad.dtype is FP32 and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen)


def test_unfrozen_blocks_of_a_bf16_backbone_train_in_fp32_and_the_base_model_keeps_its_weights():
    backbone = bf16_llama()
    params = unfreeze_top_layers(backbone.model, 1)
    assert all(p.dtype is FP32 for p in params)
    model = SoftPromptModel(backbone)
    ids, mask = encode(model.tokenizer, TEXTS)
    before = model(ids, mask).logits.detach()
    model(ids, mask).logits.float().logsumexp(-1).mean().backward()  # autocast runs the fp32 block in bf16
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * p.grad.sign())
    assert (model(ids, mask).logits - before).abs().max() > 0.01
    with model.untouched():
        assert torch.equal(model(ids, mask).logits, before)


# --------------------------------------------------------------------------- generation in bf16


def _first_mismatch(a: torch.Tensor, b: torch.Tensor) -> int | None:
    diff = (a != b).nonzero()
    return int(diff[0]) if len(diff) else None


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_bf16_greedy_with_cache_equals_without(name):
    """Token for token, except that where the two first differ the recomputed path's top two logits
    must be within twice the bf16 bound of each other: a near-tie, which rounding may break either
    way (bf16 logits of this model tie exactly now and then; after a broken tie the two sequences
    continue different texts). A placement error moves logits by order 1 and fails at a clear step."""
    model = bf16_model(name)
    ids, mask = encode(model.tokenizer, TEXTS)
    cond = condition_for(name, len(TEXTS))
    steps = 12
    out = model.generate(TEXTS, max_new_tokens=steps, do_sample=False, eos_token_ids=[], condition=cond)
    reference = greedy_without_cache(model, ids, mask, steps, condition=cond)
    tol = bf16_path_tolerance(logit_scale(model, ids, mask, cond), depth_and_width(model)[0])
    with torch.no_grad():  # the recomputed path's logits at each of its greedy steps
        full = torch.cat([ids, reference], 1)
        logits = model(full, torch.cat([mask, torch.ones_like(reference)], 1), condition=cond,
                       logits_to_keep=steps + 1).logits[:, :-1].float()
    top2 = logits.topk(2, -1).values
    gaps = top2[..., 0] - top2[..., 1]
    agreed = 0
    for row in range(len(TEXTS)):
        t = _first_mismatch(out.completion_ids[row], reference[row])
        agreed += steps if t is None else t
        if t is not None:
            assert gaps[row, t] <= 2 * tol, f"row {row} differs at step {t} where the top-2 gap is {gaps[row, t]:.3g}"
    assert agreed >= len(TEXTS) * steps // 2  # most of it was compared token for token


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_bf16_sampling_logprobs_equal_teacher_forcing(family, name):
    """On every causal family: the paper presets run them in bf16."""
    backbone = CAUSAL_FAMILIES[family]()
    backbone.model.to(BF16)
    model = bf16_model(name, backbone)
    temperature, g = 0.7, 3
    cond = condition_for(name, len(TEXTS))
    out = model.generate(TEXTS, max_new_tokens=10, do_sample=True, temperature=temperature, group_size=g, seed=3,
                         condition=cond)
    assert out.logprobs.dtype is FP32
    prompt_ids, prompt_mask = out.expanded_prompts()
    rows = cond.repeat_interleave(g, 0) if cond is not None else None
    teacher = model.sequence_logprobs(prompt_ids, prompt_mask, out.completion_ids, out.completion_mask,
                                      temperature=temperature, condition=rows).detach()
    grouped = model.grouped_logprobs(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, g,
                                     temperature=temperature, condition=cond).detach()
    assert teacher.dtype is FP32 and grouped.dtype is FP32  # logits upcast before the log-softmax
    ids, mask = encode(model.tokenizer, TEXTS)
    tol = bf16_path_tolerance(logit_scale(model, ids, mask, cond) / temperature, depth_and_width(model)[0])
    real = out.completion_mask.bool()
    assert real.sum() > 20
    for recomputed in (teacher, grouped):
        diff = float((recomputed - out.logprobs)[real].abs().max())
        assert diff <= tol, f"{diff:.3g} > the bf16 bound {tol:.3g}"


# --------------------------------------------------------------------------- RL: one computation


def rate_of_great(prompts, completions, examples):
    return [sum(w == "great" for w in c.split()) / max(len(c.split()), 1) for c in completions]


def length(prompts, completions, examples):
    """In [0, 1] and different between samples from the first step: every RL method gets a gradient."""
    return [min(len(c), 40) / 40 for c in completions]


PROMPTS = ["the movie was", "i loved it and", "this plot is", "a story with", "the actors were", "it is not"]


def rl_raw(tmp_path, method: dict, model: str = "tiny", **extra) -> dict:
    return {"model": {"name": model, "dtype": "bfloat16"}, "output_dir": str(tmp_path / "runs"), "seed": 0,
            "run_id": "r", "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "random",
                                       "init_seed": 0},
            "method": method, "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2},
            "generation": {"max_new_tokens": 6, "temperature": 1.0, "eval_samples": 2},
            "train": {"batch": 3, "epochs": 1, "max_steps": 1, "lr": 0.3, "warmup_ratio": 0.0,
                      "scheduler": "constant"}, **extra}


@pytest.mark.parametrize("method", [{"name": "grpo", "group_size": 3, "beta": 0.1},
                                    {"name": "ppo", "group_size": 2}])
def test_bf16_old_logprobs_come_from_the_computation_that_recomputes_them(tmp_path, method):
    """The ratio of the first inner update is exactly 1: the stored old log-probs are the teacher-forced
    pass the objective runs again (with gradients, in train mode). Generation's own log-probs, from
    the cached decoding, are within the bf16 bound of them but not equal."""
    from softprompt.training.assemble import build_rl
    from softprompt.training.rollout import make_rollout

    backbone = bf16_llama(vocab_size=50)
    work, data = build_rl(from_dict(rl_raw(tmp_path, method)), rewards=[rate_of_great], backbone=backbone)
    ro = make_rollout(work.module, data.train[:3], work.gen, work.rewards, work.reference, values=work.values)
    assert ro.recomputed_logprobs is not None
    work.module.train()
    new = work.module.logprobs(ro, with_values=work.values)[0]
    assert new.requires_grad
    assert torch.equal(new.detach(), ro.old_logprobs)
    if ro.ref_logprobs is not None:  # the reference is the same computation with the initial prompt: KL 0
        assert torch.equal(ro.ref_logprobs, ro.old_logprobs)
    real = ro.completion_mask.bool()
    ids, mask = encode(backbone.tokenizer, PROMPTS[:3])
    tol = bf16_path_tolerance(logit_scale(work.module.model, ids, mask), depth_and_width(backbone)[0])
    assert float((ro.gen.logprobs - ro.old_logprobs)[real].abs().max()) <= tol


# --------------------------------------------------------------------------- one step of every method


POS = ["the movie was great", "i loved it", "really fun and good", "a great story", "so good", "great actors"]
NEG = ["the movie was awful", "i hated it", "a boring plot", "bad actors", "not very good", "an awful story"]


def glue(tmp_path):
    root = tmp_path / "glue" / "SST-2"
    root.mkdir(parents=True, exist_ok=True)
    rows = [f"{t} \t1" for t in POS] + [f"{t} \t0" for t in NEG]
    (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:4]) + "\n")
    return str(tmp_path / "glue")


def classification_raw(tmp_path, method: dict, model: str) -> dict:
    return {"model": {"name": model, "dtype": "bfloat16"}, "classifier": "verbalizer",
            "output_dir": str(tmp_path / "runs"), "run_id": "r",
            "task": {"name": "sst2", "data_dir": glue(tmp_path), "template": "{text} :",
                     "label_words": [["bad", "awful"], ["good", "great"]]},
            "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
            "method": method, "train": {"batch": 4, "epochs": 1, "max_steps": 1, "lr": 0.05}}


def preference_raw(tmp_path, model: str) -> dict:
    rows = [{"prompt": "the movie", "chosen": f"{p} and {p}", "rejected": n} for p, n in zip(POS, NEG)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    return {"model": {"name": model, "dtype": "bfloat16"}, "output_dir": str(tmp_path / "runs"), "run_id": "rm",
            "adapter": {"type": "prefix_tuning", "num_virtual_tokens": 2},
            "method": {"name": "reward_pairwise"},
            "preferences": {"file": str(tmp_path / "prefs.jsonl"), "eval_ratio": 0.25},
            "train": {"batch": 4, "epochs": 1, "max_steps": 1, "lr": 0.05, "head_lr": 0.05}}


STEPS = {
    "mle": ("classification", {"name": "mle"}),
    "ptcprl": ("classification", {"name": "ptcprl", "phase1_epochs": 0, "k_negatives": 1, "rl_subset_size": 2}),
    "grpo": ("rl", {"name": "grpo", "group_size": 3, "beta": 0.1}),
    "ppo": ("rl", {"name": "ppo", "group_size": 2}),
    "ppo_single_step": ("rl", {"name": "ppo_single_step", "group_size": 2}),
    "polychromic": ("rl", {"name": "polychromic", "n_generations": 4, "set_size": 2, "num_sets": 3,
                           "diversity": "distinct", "mle_weight": 0.0}),
    "reward_pairwise": ("preference", None),
}


@pytest.mark.parametrize("name", list(STEPS))
def test_one_bf16_training_step_of_every_method(tmp_path, name):
    """model.dtype=bfloat16 end to end on the CPU: the backbone loads in bf16, the trained weights
    and AdamW's moments are fp32, the loss is finite and the step moves every trained weight."""
    from softprompt.training.assemble import make_trainer

    kind, method = STEPS[name]
    if kind == "preference":
        raw = preference_raw(tmp_path, str(save_backbone(tiny_bert(), tmp_path / "bert")))
    else:
        model = str(save_backbone(tiny_llama(vocab_size=50), tmp_path / "model"))
        raw = rl_raw(tmp_path, method, model) if kind == "rl" else classification_raw(tmp_path, method, model)
    trainer = make_trainer(from_dict(raw), progress=False, rewards=[length] if kind == "rl" else None)
    trainer.work.evaluate_before = False
    assert trainer.clf.model.compute_dtype is BF16
    params = [p for p in trainer.clf.trainable_parameters() if p.requires_grad]
    assert params and all(p.dtype is FP32 for p in params)
    start = [p.detach().clone() for p in params]
    logs = []
    trainer.on_step = logs.append
    trainer.fit(progress=False)
    assert len(logs) == 1 and torch.isfinite(torch.tensor(logs[0]["loss"]))
    assert all(p.dtype is FP32 for p in params)
    moved = [not torch.equal(a, p.detach()) for a, p in zip(start, params)]
    assert all(moved), f"{moved.count(False)} of {len(params)} trained tensors did not move"
    moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
    assert moments and all(m.dtype is FP32 for m in moments)


def test_fp16_scales_the_loss_and_an_overflow_lowers_the_scale_without_a_bad_step(tmp_path):
    from softprompt.training.assemble import make_trainer

    raw = classification_raw(tmp_path, {"name": "mle"}, str(save_backbone(tiny_llama(), tmp_path / "model")))
    raw["model"]["dtype"] = "float16"
    raw["train"].update(max_steps=2, epochs=4)
    trainer = make_trainer(from_dict(raw), progress=False)
    assert trainer.scaler.is_enabled()
    scale = trainer.scaler.get_scale()
    objective, calls = trainer.objectives["mle"], [0]

    def overflow_once(inputs):  # the first backward overflows, as a too-large loss scale makes it
        out = objective(inputs)
        if calls[0] == 0:
            out.loss = out.loss + poisoned_grad(out.loss, float("inf"))
        calls[0] += 1
        return out
    trainer.objectives["mle"] = overflow_once
    logs = []
    trainer.on_step = logs.append
    metrics = trainer.fit(progress=False)
    skips = trainer.counters["loss_scale_skips"]  # ours, and any the tiny model's own gradients add at 2^16
    assert metrics["skipped_steps"] == 0 and skips >= 1 and metrics["global_step"] == 2
    assert len(logs) == 2 and logs[-1]["loss_scale"] == trainer.scaler.get_scale() == scale / 2 ** skips
    assert all(torch.isfinite(p).all() and p.dtype is FP32 for p in trainer.clf.trainable_parameters())
    state = json.loads((trainer.run.checkpoints / "last" / "trainer_state.json").read_text())
    assert state["counters"]["grad_scaler"]["scale"] == scale / 2 ** skips  # a resumed run goes on at this scale
