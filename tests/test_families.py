"""What differs between model families (docs/design.md, "Model families"): LoRA's targets, the
prefix in each family's cache, Gemma-3's sliding window, GPT-2's learned positions, and Qwen3-Embedding's
last-token pooling. The shared placement and generation tests run on every family already (the
``causal_lm`` fixture); these go where one family differs."""

import pytest
import torch
from conftest import CAUSAL_FAMILIES, tiny_bert, tiny_gemma3, tiny_gpt2, tiny_qwen3_embedding
from helpers import assert_paths_agree, encode, greedy_without_cache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from softprompt import ConfigError, LoRAConfig, PrefixTuningConfig, PromptTuningConfig, SoftPromptModel
from softprompt.modeling.classifiers import EmbeddingClassifier
from softprompt.modeling.families import position_limit, sliding_window

# ------------------------------------------------------------------------------------------- LoRA

LORA_TARGETS = {"llama": {"q_proj", "v_proj"}, "qwen3": {"q_proj", "v_proj"}, "gemma3": {"q_proj", "v_proj"},
                "gpt2": {"c_attn"}, "bert": {"query", "value"}}


@pytest.mark.parametrize("name", list(LORA_TARGETS))
def test_lora_finds_each_familys_attention_projections(name):
    backbone = tiny_bert() if name == "bert" else CAUSAL_FAMILIES[name]()
    SoftPromptModel.from_backbone(backbone, LoRAConfig(r=2))  # PEFT injects the LoRA layers into the backbone
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in backbone.model.named_parameters()
               if ".lora_A" in n}
    assert adapted == LORA_TARGETS[name]
    assert len([n for n, _ in backbone.model.named_parameters() if ".lora_A" in n]) == 2 * len(adapted)  # 2 blocks


def test_lora_on_gpt2s_conv1d_is_the_low_rank_update_of_its_transposed_weight():
    """Conv1D stores W as (in, out): the update B A must land transposed, or the layer computes garbage."""
    backbone = tiny_gpt2()
    model = SoftPromptModel.from_backbone(backbone, LoRAConfig(r=2, alpha=2))
    layer = backbone.model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, backbone.hidden_size)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, in), (out, r)
    expected = x @ layer.base_layer.weight + layer.base_layer.bias + x @ a.T @ b.T  # alpha / r = 1
    torch.testing.assert_close(layer(x), expected)


# ------------------------------------------------------------------------- prefix in the cache


def test_prefix_keys_and_values_sit_first_in_each_familys_cache_layers(causal_lm, family):
    """The prefix is the first n keys/values of every layer, in the cache class the family builds
    (Gemma-3: a sliding-window layer for its local attention, a full one for its global)."""
    model = SoftPromptModel.from_backbone(causal_lm, PrefixTuningConfig(num_virtual_tokens=3, init="random",
                                                                         init_seed=2))
    ids, mask = encode(causal_lm.tokenizer, ["the movie was great", "i loved it"])
    cache = model(ids, mask, use_cache=True).cache
    kinds = [type(layer) for layer in cache.layers]
    expected = [DynamicSlidingWindowLayer, DynamicLayer] if family == "gemma3" else [DynamicLayer, DynamicLayer]
    assert kinds == expected
    for layer, (k, v) in zip(cache.layers, model.prefix_key_values(2)):
        assert layer.keys.shape[2] == 3 + ids.shape[1]
        torch.testing.assert_close(layer.keys[:, :, :3], k)
        torch.testing.assert_close(layer.values[:, :, :3], v)


# ----------------------------------------------------------------------- Gemma-3 sliding window

LONG = ["the movie was great and i really loved it but the plot was boring", "a bad film",
        "i hated the actors in this very very boring film"]


@pytest.fixture
def windowed():
    """Gemma-3 with an 8-position sliding window: every layout below runs past it."""
    backbone = tiny_gemma3(sliding_window=8)
    assert sliding_window(backbone.config) == 8
    return backbone


def test_sliding_window_is_read_from_each_familys_config():
    assert sliding_window(tiny_gemma3(sliding_window=8).config) == 8
    for name in ("llama", "qwen3", "gpt2"):
        assert sliding_window(CAUSAL_FAMILIES[name]().config) is None


def test_shared_prompt_cache_is_used_only_inside_the_window(windowed):
    model = SoftPromptModel.from_backbone(windowed, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    assert model.shares_prompt_cache(5)  # 3 + 5 = 8 positions: all inside the window
    assert not model.shares_prompt_cache(6)
    assert not model.shares_prompt_cache()  # length unknown


@pytest.mark.parametrize("name", ["prompt", "lora", "none"])
def test_past_the_window_batched_equals_one_by_one_and_cache_equals_recompute(windowed, name):
    configs = {"prompt": PromptTuningConfig(num_virtual_tokens=4, init="random", init_seed=0),
               "lora": LoRAConfig(r=2), "none": None}
    model = SoftPromptModel.from_backbone(windowed, configs[name])
    if name == "lora":
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.normal_(0, 0.2)
    ids, mask = encode(windowed.tokenizer, LONG)
    assert ids.shape[1] > 8 and (mask == 0).any()
    batched = model(ids, mask).logits
    for i, text in enumerate(LONG):
        one_ids, one_mask = encode(windowed.tokenizer, [text])
        assert_paths_agree(batched[i, -one_ids.shape[1]:], model(one_ids, one_mask).logits[0], model)
    out = model.generate(LONG, max_new_tokens=8, do_sample=False, eos_token_ids=[])
    assert torch.equal(out.completion_ids, greedy_without_cache(model, ids, mask, 8))
    for i, text in enumerate(LONG):
        alone = model.generate([text], max_new_tokens=8, do_sample=False, eos_token_ids=[])
        assert torch.equal(alone.completion_ids[0], out.completion_ids[i])
        assert_paths_agree(alone.logprobs[0], out.logprobs[i], model)


def test_past_the_window_sampled_logprobs_equal_teacher_forcing(windowed):
    model = SoftPromptModel.from_backbone(windowed, PromptTuningConfig(num_virtual_tokens=4, init="random"))
    out = model.generate(LONG, max_new_tokens=8, do_sample=True, temperature=0.8, group_size=2, seed=1)
    prompt_ids, prompt_mask = out.expanded_prompts()
    teacher = model.sequence_logprobs(prompt_ids, prompt_mask, out.completion_ids, out.completion_mask,
                                      temperature=0.8)
    grouped = model.grouped_logprobs(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, 2,
                                     temperature=0.8)
    assert_paths_agree(out.logprobs, teacher, model)
    assert_paths_agree(out.logprobs, grouped, model)


def test_past_the_window_a_text_prompt_slides_like_the_hard_prompt(windowed):
    text = "this movie was"
    n = len(windowed.tokenizer(text, add_special_tokens=False)["input_ids"])
    model = SoftPromptModel.from_backbone(windowed, PromptTuningConfig(num_virtual_tokens=n, init=f"text:{text}"))
    ids, mask = encode(windowed.tokenizer, LONG)
    soft = model(ids, mask).logits
    hard_ids, hard_mask = encode(windowed.tokenizer, [f"{text} {t}" for t in LONG])
    hard = SoftPromptModel(windowed)(hard_ids, hard_mask).logits[:, -ids.shape[1]:]
    assert_paths_agree(soft[mask.bool()], hard[mask.bool()], model)


def test_past_the_window_packing_falls_back_to_the_padded_pass(windowed):
    model = SoftPromptModel.from_backbone(windowed, PromptTuningConfig(num_virtual_tokens=2, init="random"))
    ids, mask = encode(windowed.tokenizer, ["i hated the actors in this very boring film", "it", "a bad film"])
    padded = model.encode(ids, mask)[0][:, -1]
    # the packed row's block mask knows no window: past it, packing would change the numbers
    assert (model._packed_last_hidden(ids, mask) - padded).abs().max() > 1e-3
    assert not model._can_pack(mask)
    assert_paths_agree(model.last_hidden(ids, mask), padded, model)
    short_ids, short_mask = encode(windowed.tokenizer, ["a bad film", "it", "the plot"])
    assert model._can_pack(short_mask)  # 2 + 3 positions fit in the window
    assert_paths_agree(model.last_hidden(short_ids, short_mask), model.encode(short_ids, short_mask)[0][:, -1], model)


def test_prefix_tuning_past_the_window_is_refused_with_the_reason(windowed):
    model = SoftPromptModel.from_backbone(windowed, PrefixTuningConfig(num_virtual_tokens=3, init="random"))
    ids, mask = encode(windowed.tokenizer, ["a bad film"])  # 3 + 3 positions: inside, allowed
    model(ids, mask)
    with pytest.raises(ConfigError, match=r"3 prefix positions \+ 6 sequence positions exceed the 8-position "
                                          r"sliding window.*use prompt_tuning"):
        model.generate(["a bad film"], max_new_tokens=3, do_sample=False)
    ids, mask = encode(windowed.tokenizer, LONG)
    with pytest.raises(ConfigError, match="sliding window"):
        model(ids, mask)


# ------------------------------------------------------------------------- GPT-2 learned positions


def test_gpt2_virtual_tokens_take_learned_positions_and_running_out_is_refused():
    backbone = tiny_gpt2()
    assert position_limit(backbone.model) == 256 and position_limit(CAUSAL_FAMILIES["llama"]().model) is None
    model = SoftPromptModel.from_backbone(backbone, PromptTuningConfig(num_virtual_tokens=250, init="random"))
    ids, mask = encode(backbone.tokenizer, ["the movie was great"])  # 250 + 4 = 254 positions: fits
    model(ids, mask)
    with pytest.raises(ConfigError, match=r"256 learned positions; this batch needs 260 \(250 virtual tokens"):
        model.generate(["the movie was great"], max_new_tokens=6, do_sample=False)


# --------------------------------------------------------------------- Qwen3-Embedding pooling


@pytest.mark.parametrize("config", [PromptTuningConfig(num_virtual_tokens=3, init="random"),
                                    PrefixTuningConfig(num_virtual_tokens=3, init="random"), None],
                         ids=["prompt", "prefix", "none"])
def test_qwen3_embedding_pools_each_rows_last_token(config):
    """Last-token pooling (Qwen3-Embedding's card) on a left-padded batch: each row's embedding is its
    final token's hidden state, the same as embedding the text alone."""
    backbone = tiny_qwen3_embedding()
    model = SoftPromptModel.from_backbone(backbone, config)
    classifier = EmbeddingClassifier(model, 2)
    assert classifier.pooling == "last"
    texts = ["the movie was great", "i loved it", "a really boring and very bad plot with actors"]
    ids, mask = encode(backbone.tokenizer, texts)
    assert (mask[:, 0] == 0).any()
    pooled = classifier.features({"input_ids": ids, "attention_mask": mask})
    for i, text in enumerate(texts):
        one_ids, one_mask = encode(backbone.tokenizer, [text])
        hidden, _ = model.encode(one_ids, one_mask)
        assert_paths_agree(pooled[i], hidden[0, -1], model)


def test_chat_on_a_model_without_a_chat_template_is_a_one_line_error(tmp_path):
    """GPT-2 has no chat template: generation and an RL config with generation.chat say so, the config
    before its run folder exists."""
    from conftest import save_backbone

    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    model = SoftPromptModel(tiny_gpt2())
    with pytest.raises(ConfigError, match="has no chat template"):
        model.generate(["the movie"], chat=True, max_new_tokens=2)
    path = save_backbone(tiny_gpt2(), tmp_path / "gpt2")
    config = from_dict({"model": str(path), "output_dir": str(tmp_path / "runs"), "method": {"name": "grpo"},
                        "prompts": {"source": "list", "items": ["the movie", "a film"], "num_eval": 1},
                        "generation": {"chat": True, "max_new_tokens": 2},
                        "rewards": [{"name": "length"}], "train": {"batch": 1, "max_steps": 1}})
    with pytest.raises(ConfigError, match=r"generation.chat is on but '.*gpt2' has no chat template"):
        make_trainer(config, progress=False)
    assert not (tmp_path / "runs").exists()
