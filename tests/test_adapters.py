"""Adapters: gradients reach only them, save/load round-trips, bad configs and files fail clearly."""

import logging

import pytest
import torch
from conftest import tiny_llama
from helpers import encode

from softprompt import (
    AdapterLoadError,
    ConditionalPromptConfig,
    ConfigError,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)

CONFIGS = {
    "prompt": PromptTuningConfig(num_virtual_tokens=4, init="vocab", init_seed=0),
    "prefix": PrefixTuningConfig(num_virtual_tokens=3, init="vocab", init_seed=0),
    "prefix_mlp": PrefixTuningConfig(num_virtual_tokens=3, reparameterize=True, encoder_hidden_size=16),
    "conditional": ConditionalPromptConfig(num_virtual_tokens=3, condition_dim=4),
    "lora": LoRAConfig(r=2),
}
TEXTS = ["the movie was great", "i loved it"]


def _forward(model, ids, mask):
    cond = torch.ones(ids.shape[0], 4) if model.adapter.needs_condition else None
    return model(ids, mask, condition=cond).logits


@pytest.mark.parametrize("name", list(CONFIGS))
def test_only_adapter_parameters_get_gradients(llama, name):
    model = SoftPromptModel.from_backbone(llama, CONFIGS[name])
    ids, mask = encode(llama.tokenizer, TEXTS)
    loss = _forward(model, ids, mask)[mask.bool()].logsumexp(-1).mean()
    loss.backward()
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable
    for n, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, n
            # LoRA's A gets a zero gradient while B is still at its zero init
            assert "lora_A" in n or p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, f"frozen parameter {n} got a gradient"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_then_load_gives_identical_logits(llama, name, tmp_path):
    model = SoftPromptModel.from_backbone(llama, CONFIGS[name])
    with torch.no_grad():  # move the weights off their init so the round-trip is not trivially true
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, mask = encode(llama.tokenizer, TEXTS)
    before = _forward(model, ids, mask)
    saved = {k: v.clone() for k, v in model.adapter.adapter_state_dict().items()}
    model.save_pretrained(tmp_path / "adapter")
    fresh = tiny_llama()  # same seed, same frozen weights, no adapter
    loaded = SoftPromptModel.from_pretrained(tmp_path / "adapter", backbone=fresh)
    assert loaded.adapter.config == model.adapter.config
    for k, v in loaded.adapter.adapter_state_dict().items():
        assert torch.equal(v, saved[k])
    assert torch.equal(_forward(loaded, ids, mask), before)


def test_lora_training_changes_only_lora(llama):
    model = SoftPromptModel.from_backbone(llama, LoRAConfig(r=2))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    ids, mask = encode(llama.tokenizer, TEXTS)
    for _ in range(3):
        opt.zero_grad()
        model(ids, mask).logits[..., 5].mean().neg().backward()
        opt.step()
    for n, p in model.named_parameters():
        if "lora_" in n:
            continue
        assert torch.equal(p, frozen[n]), n
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with model.adapter.disabled():
        base = model(ids, mask).logits
    assert torch.allclose(base, SoftPromptModel(tiny_llama())(ids, mask).logits, atol=1e-6)


def test_bad_configs_are_clear():
    with pytest.raises(ConfigError, match=r"'adapter.num_virtual_tokens'=0: expected an integer >= 1"):
        PromptTuningConfig(num_virtual_tokens=0)
    with pytest.raises(ConfigError, match=r"'adapter.num_virtual_tokens'=-3: expected an integer >= 1"):
        PrefixTuningConfig(num_virtual_tokens=-3)
    with pytest.raises(ConfigError, match="'random', 'vocab' or 'text:"):
        PromptTuningConfig(init="txt:hello")
    with pytest.raises(ConfigError, match="did you mean 'adapter.num_virtual_tokens'"):
        PromptTuningConfig.from_dict({"num_virtual_token": 3})


def test_text_init_longer_than_n_is_truncated_with_warning(llama, caplog):
    with caplog.at_level(logging.WARNING):
        model = SoftPromptModel.from_backbone(llama, PromptTuningConfig(num_virtual_tokens=2,
                                                                        init="text:the movie was great"))
    assert "truncated" in caplog.text
    ids = llama.tokenizer("the movie", add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    assert torch.equal(model.adapter.embeddings, llama.input_embeddings().weight[ids])


def test_adapter_for_another_hidden_size_is_refused(tmp_path):
    from conftest import tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from softprompt.backbones import Backbone

    model = SoftPromptModel.from_backbone(tiny_llama(), PromptTuningConfig(num_virtual_tokens=3, init="random"))
    model.save_pretrained(tmp_path / "a")
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    other = Backbone(model=wide, tokenizer=tiny_tokenizer(), spec="wide-llama", path="", kind="causal_lm")
    with pytest.raises(AdapterLoadError, match="hidden_size=64.*has hidden_size=96"):
        SoftPromptModel.from_pretrained(tmp_path / "a", backbone=other)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_weights_file_is_a_clear_error(llama, tmp_path, damage):
    model = SoftPromptModel.from_backbone(llama, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    directory = model.save_pretrained(tmp_path / "a")
    weights = directory / "adapter.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-50])
    elif damage == "garbage":
        weights.write_bytes(b"\x00\x01not safetensors at all" * 10)
    else:
        weights.unlink()
    with pytest.raises(AdapterLoadError, match="adapter.safetensors"):
        SoftPromptModel.from_pretrained(directory, backbone=llama)


def test_missing_or_bad_adapter_dir(tmp_path, llama):
    with pytest.raises(AdapterLoadError, match="holds no softprompt adapter"):
        SoftPromptModel.from_pretrained(tmp_path, backbone=llama)
    (tmp_path / "softprompt_adapter.json").write_text("{not json")
    with pytest.raises(AdapterLoadError, match="not valid JSON"):
        SoftPromptModel.from_pretrained(tmp_path, backbone=llama)
