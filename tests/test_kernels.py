"""Decoding helpers: the inverse-CDF sampler and the packed-weight linears."""

import pytest
import torch
from helpers import assert_paths_agree, encode

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.modeling.generation import sample
from softprompt.modeling.kernels import packed_linears, packing_available


def test_sampler_matches_the_distribution_and_skips_zero_mass():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    draws = sample(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6).float() / len(draws)
    assert counts[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(counts, probs[0], atol=0.015, rtol=0)
    # unnormalised input (top-k masked softmax rows need not sum to exactly 1)
    draws = sample(torch.tensor([[2.0, 0.0, 6.0]]).repeat(20000, 1), torch.Generator().manual_seed(1))
    assert abs((draws == 2).float().mean().item() - 0.75) < 0.015
    assert not (draws == 1).any()


@pytest.fixture(autouse=True)
def pack_tiny_models(monkeypatch):
    """The tiny test models are below the packing size threshold; pack them anyway here."""
    monkeypatch.setattr("softprompt.modeling.kernels.MIN_PACKED_NUMEL", 0)


def test_packed_linears_match_dense_and_restore(llama):
    model = SoftPromptModel.from_backbone(llama, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    ids, mask = encode(llama.tokenizer, ["the movie was great", "i loved it"])
    with torch.no_grad():
        dense = model(ids, mask).logits
        with packed_linears(model.model):
            packed = model(ids, mask).logits
            if packing_available(model.model):
                assert "forward" in vars(model.model.lm_head), "lm_head should use the packed path"
        after = model(ids, mask).logits
    assert_paths_agree(packed, dense, model)
    assert torch.equal(after, dense)
    assert "forward" not in vars(model.model.lm_head)
    # with grad enabled the packed path steps aside, so gradients still flow
    with packed_linears(model.model):
        model(ids, mask).logits.sum().backward()
    assert model.adapter.embeddings.grad is not None


def test_generation_same_with_and_without_packing(llama):
    model = SoftPromptModel.from_backbone(llama, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    texts = ["the movie was", "i really loved it and the plot"]
    a = model.generate(texts, max_new_tokens=10, do_sample=False, eos_token_ids=[], fast_kernels=True)
    b = model.generate(texts, max_new_tokens=10, do_sample=False, eos_token_ids=[], fast_kernels=False)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert_paths_agree(a.logprobs, b.logprobs, model)
