"""The placement contract: virtual tokens after the left pads, positions from the first real token."""

import pytest
import torch
from conftest import tiny_bert, tiny_qwen3_embedding
from helpers import assert_paths_agree, encode

from softprompt import (
    ConditionalPromptConfig,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)
from softprompt.modeling.placement import insert_virtual, position_ids

CONFIGS = {
    "prompt": PromptTuningConfig(num_virtual_tokens=4, init="random", init_seed=1),
    "prefix": PrefixTuningConfig(num_virtual_tokens=3, init="random", init_seed=1),
    "prefix_mlp": PrefixTuningConfig(num_virtual_tokens=3, reparameterize=True, encoder_hidden_size=16, init_seed=1),
    "lora": LoRAConfig(r=2),
    "none": None,
}
TEXTS = ["the movie was great", "i loved it", "a really boring and very bad plot with actors"]


def test_insert_virtual_layout():
    embeds = torch.arange(1, 6, dtype=torch.float).view(1, 5, 1).repeat(2, 1, 1)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])  # left-padded; trailing pad (completion) row
    virtual = torch.full((2, 2, 1), -1.0)
    full, full_mask = insert_virtual(embeds, mask, virtual)
    assert full[0, :, 0].tolist() == [1, 2, -1, -1, 3, 4, 5]
    assert full_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert full[1, :, 0].tolist() == [-1, -1, 1, 2, 3, 4, 5]
    assert full_mask[1].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert position_ids(full_mask)[0].tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert position_ids(mask, offset=3)[0].tolist() == [3, 3, 3, 4, 5]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_equals_one_by_one(causal_lm, name):
    model = SoftPromptModel.from_backbone(causal_lm, CONFIGS[name])
    if name == "lora":  # a fresh LoRA is the identity; move it so the test means something
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.normal_(0, 0.2)
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    assert (mask[:, 0] == 0).any(), "the batch must contain left padding"
    batched = model(ids, mask).logits
    for i, text in enumerate(TEXTS):
        one_ids, one_mask = encode(causal_lm.tokenizer, [text])
        alone = model(one_ids, one_mask).logits[0]
        length = one_ids.shape[1]
        assert_paths_agree(batched[i, -length:], alone, model)


def test_shared_prompt_cache_equals_in_sequence(causal_lm):
    model = SoftPromptModel.from_backbone(causal_lm, CONFIGS["prompt"])
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    assert model.shares_prompt_cache(mask.shape[1])
    shared = model(ids, mask).logits
    hidden, real = model.encode(ids, mask)
    model.share_prompt = False
    real_rows = mask.bool()  # pads' outputs are meaningless in either layout
    assert_paths_agree(shared[real_rows], model(ids, mask).logits[real_rows], model)
    hidden_seq, real_seq = model.encode(ids, mask)
    assert_paths_agree(hidden[real.bool()], hidden_seq[real_seq.bool()], model)
    # the gradient reaches the prompt through the cached K/V too
    model.share_prompt = True
    model(ids, mask).logits[mask.bool()].logsumexp(-1).sum().backward()
    assert model.adapter.embeddings.grad.abs().sum() > 0


def test_conditional_batched_equals_one_by_one(causal_lm):
    model = SoftPromptModel.from_backbone(causal_lm, ConditionalPromptConfig(num_virtual_tokens=3, condition_dim=8,
                                                                         init_seed=0))
    cond = torch.randn(3, 8)
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    batched = model(ids, mask, condition=cond).logits
    for i, text in enumerate(TEXTS):
        one_ids, one_mask = encode(causal_lm.tokenizer, [text])
        alone = model(one_ids, one_mask, condition=cond[i:i + 1]).logits[0]
        assert_paths_agree(batched[i, -one_ids.shape[1]:], alone, model)
    other = model(ids, mask, condition=torch.randn(3, 8)).logits
    assert not torch.allclose(batched, other), "the condition must change the output"


@pytest.mark.parametrize("adapter", ["prompt", "prefix"])
def test_text_init_equals_hard_prompt(causal_lm, adapter):
    """A prompt or prefix initialised from a text starts out equal to that text as a hard prompt."""
    text = "this movie was"
    n = len(causal_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    cls = PromptTuningConfig if adapter == "prompt" else PrefixTuningConfig
    model = SoftPromptModel.from_backbone(causal_lm, cls(num_virtual_tokens=n, init=f"text:{text}"))
    ids, mask = encode(causal_lm.tokenizer, ["i loved it", "the plot"])
    soft = model(ids, mask).logits
    hard_ids, hard_mask = encode(causal_lm.tokenizer, [f"{text} i loved it", f"{text} the plot"])
    hard = SoftPromptModel(causal_lm)(hard_ids, hard_mask).logits
    real = mask.bool()  # pads have no meaningful output
    assert_paths_agree(soft[real], hard[:, -ids.shape[1]:][real], model)


@pytest.mark.parametrize("encoder", ["bert", "qwen3_embedding"])
@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_encoder_padding_invariant(encoder, name):
    """Embedding models: BERT right-padded, a Qwen3 embedding model (a decoder) left-padded."""
    backbone = tiny_bert() if encoder == "bert" else tiny_qwen3_embedding()
    model = SoftPromptModel.from_backbone(backbone, CONFIGS[name])
    ids, mask = encode(backbone.tokenizer, TEXTS)  # padded on the tokenizer's side
    assert (mask == 0).any()
    hidden, full_mask = model.encode(ids, mask)
    for i, text in enumerate(TEXTS):
        one_ids, one_mask = encode(backbone.tokenizer, [text])
        alone, alone_mask = model.encode(one_ids, one_mask)
        rows = full_mask[i].bool()
        assert_paths_agree(hidden[i][rows], alone[0][alone_mask[0].bool()], model)


@pytest.mark.parametrize("name", ["prompt", "prefix", "lora", "none"])
def test_packed_last_hidden_equals_padded(causal_lm, name):
    model = SoftPromptModel.from_backbone(causal_lm, CONFIGS[name])
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    assert model._can_pack(mask)
    packed = model.last_hidden(ids, mask)
    padded = model.encode(ids, mask)[0][:, -1]
    assert_paths_agree(packed, padded, model)
    if model.trainable_parameters():
        # a random direction: a plain sum has no gradient through a LayerNorm with unit weight (GPT-2's)
        direction = torch.randn(packed.shape, generator=torch.Generator().manual_seed(0))
        (packed * direction).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())
