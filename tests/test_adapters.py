"""Adapters: gradients reach only them, save/load round-trips, bad configs and files fail clearly."""

import logging

import pytest
import torch
from conftest import CAUSAL_FAMILIES, tiny_llama
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
def test_only_adapter_parameters_get_gradients(causal_lm, name):
    model = SoftPromptModel.from_backbone(causal_lm, CONFIGS[name])
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
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
def test_save_then_load_gives_identical_logits(causal_lm, family, name, tmp_path):
    model = SoftPromptModel.from_backbone(causal_lm, CONFIGS[name])
    with torch.no_grad():  # move the weights off their init so the round-trip is not trivially true
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    before = _forward(model, ids, mask)
    saved = {k: v.clone() for k, v in model.adapter.adapter_state_dict().items()}
    model.save_pretrained(tmp_path / "adapter")
    fresh = CAUSAL_FAMILIES[family]()  # same seed, same frozen weights, no adapter
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

    from softprompt.modeling.backbones import Backbone

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


# -- initialisation on a backbone whose input embeddings are scaled (Gemma: table x sqrt(H)) -------------------


def _ids(backbone, text):
    return backbone.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@pytest.mark.parametrize("share_prompt", [True, False])
def test_text_init_gives_the_hard_prompts_logits_on_gemma(gemma3, share_prompt):
    """A prompt initialised from "X Y" before Z is the plain model on "X Y Z": the same vectors enter
    every layer at the same positions, so the logits agree to float32 round-off (the shared-prompt
    path only splits the attention sums differently). Read from the raw table, the prompt would
    be sqrt(64) = 8 times too small."""
    assert float(gemma3.input_embeddings().embed_scale) == 8.0
    model = SoftPromptModel.from_backbone(gemma3, PromptTuningConfig(num_virtual_tokens=2,
                                                                     init="text:the movie"))
    model.share_prompt = share_prompt
    z = _ids(gemma3, "was really great")
    soft = model(z).logits
    hard = gemma3.model(input_ids=_ids(gemma3, "the movie was really great")).logits[:, 2:]
    torch.testing.assert_close(soft, hard, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.adapter.embeddings, gemma3.input_embeddings()(_ids(gemma3, "the movie")[0]))


def test_random_and_vocab_inits_have_the_scale_of_the_embedding_modules_outputs(gemma3):
    from softprompt.adapters.base import token_ids_for_init

    module = gemma3.input_embeddings()
    outputs = module(torch.arange(module.weight.shape[0])).double()  # tiny vocabulary: all at once is fine here
    scale = float(outputs.std())
    assert scale == pytest.approx(8 * float(module.weight.std()), rel=1e-4)
    random = SoftPromptModel.from_backbone(gemma3, PromptTuningConfig(num_virtual_tokens=400, init="random",
                                                                      init_seed=0)).adapter.embeddings
    assert float(random.detach().std()) == pytest.approx(scale, rel=0.1)
    vocab = SoftPromptModel.from_backbone(gemma3, PromptTuningConfig(num_virtual_tokens=6, init="vocab",
                                                                     init_seed=3)).adapter.embeddings
    ids = token_ids_for_init("vocab", "", 6, gemma3, torch.Generator().manual_seed(3))
    torch.testing.assert_close(vocab, module(ids))
    mlp = SoftPromptModel.from_backbone(gemma3, PrefixTuningConfig(num_virtual_tokens=6, reparameterize=True,
                                                                   init="vocab", init_seed=3)).adapter.embeddings
    torch.testing.assert_close(mlp, module(ids))  # the MLP's input starts where the text's tokens are
    start = SoftPromptModel.from_backbone(gemma3, PrefixTuningConfig(num_virtual_tokens=400, reparameterize=True,
                                                                     init="random", init_seed=0)).adapter.embeddings
    assert float(start.detach().std()) == pytest.approx(scale, rel=0.1)


def test_embedding_statistics_merge_chunks_exactly(gemma3):
    from softprompt.adapters.base import embedding_statistics

    module = gemma3.input_embeddings()
    outputs = module(torch.arange(module.weight.shape[0])).double()
    mean, std, overall = embedding_statistics(gemma3, chunk=10)  # 64 ids in 7 chunks, the last of 4
    torch.testing.assert_close(mean, outputs.mean(0).float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(std, outputs.std(0).float(), atol=1e-6, rtol=1e-5)
    assert overall == pytest.approx(float(outputs.std()), rel=1e-5)


def test_conditional_prompt_starts_from_the_embedding_modules_outputs(gemma3):
    config = ConditionalPromptConfig(num_virtual_tokens=2, condition_dim=4, init="text:the movie")
    model = SoftPromptModel.from_backbone(gemma3, config)
    torch.testing.assert_close(model.adapter.base, gemma3.input_embeddings()(_ids(gemma3, "the movie")[0]))
    with torch.no_grad():  # with the condition network silent, the prompt is the text
        model.adapter.mlp[-1].weight.zero_()
    z = _ids(gemma3, "was really great")
    soft = model(z, condition=torch.randn(1, 4)).logits
    hard = gemma3.model(input_ids=_ids(gemma3, "the movie was really great")).logits[:, 2:]
    torch.testing.assert_close(soft, hard, atol=1e-5, rtol=1e-4)
