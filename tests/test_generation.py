"""Generation with the KV cache: exactness against recomputation, batching, groups, stopping."""

import math

import pytest
import torch
from helpers import assert_paths_agree, encode, greedy_without_cache, logprob_scale

from softprompt import (
    ConditionalPromptConfig,
    GenerationConfig,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)
from softprompt.errors import ConfigError

TEXTS = ["the movie was", "i really loved it and the plot", "a boring film"]
ADAPTERS = {
    "prompt": PromptTuningConfig(num_virtual_tokens=5, init="random", init_seed=0),
    "prefix": PrefixTuningConfig(num_virtual_tokens=4, init="random", init_seed=0),
    "prefix_mlp": PrefixTuningConfig(num_virtual_tokens=4, reparameterize=True, encoder_hidden_size=16),
    "lora": LoRAConfig(r=2),
}


def _model(backbone, name):
    model = SoftPromptModel.from_backbone(backbone, ADAPTERS[name])
    if name == "lora":
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_greedy_with_cache_equals_without(causal_lm, name):
    model = _model(causal_lm, name)
    out = model.generate(TEXTS, max_new_tokens=12, do_sample=False, eos_token_ids=[])
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    assert (mask == 0).any()
    reference = greedy_without_cache(model, ids, mask, 12)
    assert torch.equal(out.completion_ids, reference)


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_batched_equals_one_by_one(causal_lm, name):
    model = _model(causal_lm, name)
    batched = model.generate(TEXTS, max_new_tokens=10, do_sample=False, eos_token_ids=[])
    for i, text in enumerate(TEXTS):
        alone = model.generate([text], max_new_tokens=10, do_sample=False, eos_token_ids=[])
        assert torch.equal(alone.completion_ids[0], batched.completion_ids[i])
        assert_paths_agree(alone.logprobs[0], batched.logprobs[i], model)


TRUNCATIONS = {"none": {}, "top_k": {"top_k": 20}, "top_p": {"top_p": 0.8}, "both": {"top_k": 20, "top_p": 0.9}}


@pytest.mark.parametrize("truncation", list(TRUNCATIONS))
@pytest.mark.parametrize("name", list(ADAPTERS))
def test_logprobs_equal_teacher_forcing(causal_lm, name, truncation):
    """Stored log-probs are under the truncated policy sampled from; teacher forcing with the same
    settings (ungrouped and grouped) gives them back."""
    model = _model(causal_lm, name)
    trunc = TRUNCATIONS[truncation]
    out = model.generate(TEXTS, max_new_tokens=10, do_sample=True, temperature=0.7, group_size=3, seed=3, **trunc)
    assert out.completion_ids.shape[0] == 9
    prompt_ids, prompt_mask = out.expanded_prompts()
    teacher = model.sequence_logprobs(prompt_ids, prompt_mask, out.completion_ids, out.completion_mask,
                                      temperature=0.7, **trunc)
    scale = logprob_scale(model, *encode(model.tokenizer, TEXTS), temperature=0.7)
    assert_paths_agree(out.logprobs, teacher, model, scale)
    grouped = model.grouped_logprobs(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, 3,
                                     temperature=0.7, **trunc)
    assert_paths_agree(out.logprobs, grouped, model, scale)
    real = out.completion_mask.bool()
    assert (out.logprobs[real] <= 0).all() and (out.logprobs[real] < 0).any()
    if trunc:  # renormalised over the kept tokens: above the untruncated log-prob wherever something was cut
        full = model.sequence_logprobs(prompt_ids, prompt_mask, out.completion_ids, out.completion_mask,
                                       temperature=0.7)
        assert (out.logprobs[real] >= full[real] - 1e-4).all()
        assert (out.logprobs[real] - full[real]).max() > 1e-2


def test_top_k_1_samples_the_argmax_with_probability_one(llama):
    model = _model(llama, "prompt")
    out = model.generate(TEXTS, max_new_tokens=8, do_sample=True, top_k=1, temperature=1.3, seed=0, eos_token_ids=[])
    greedy = model.generate(TEXTS, max_new_tokens=8, do_sample=False, eos_token_ids=[])
    assert torch.equal(out.completion_ids, greedy.completion_ids)
    assert out.logprobs.abs().max() == 0  # the only token of the set: log 1
    assert (greedy.logprobs < -1e-3).all()  # greedy stays log softmax(logits)
    prompt_ids, prompt_mask = out.expanded_prompts()
    again = model.sequence_logprobs(prompt_ids, prompt_mask, out.completion_ids, out.completion_mask,
                                    temperature=1.3, top_k=1)
    assert again.abs().max() < 1e-6


def test_policy_logprobs_by_hand():
    from softprompt.modeling.generation import policy_logprobs, policy_scores

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    scores = policy_scores(logits, top_k=2)
    assert torch.isinf(scores[0, 2:]).all() and torch.equal(scores[0, :2], logits[0, :2])
    lp = policy_logprobs(logits.expand(4, -1), torch.arange(4), top_k=2)
    z = math.exp(2) + math.exp(1)
    expected = [2 - math.log(z), 1 - math.log(z),  # inside the set: renormalised over it
                0 - math.log(z + 1), -1 - math.log(z + math.exp(-1))]  # outside: kept in the set, finite
    torch.testing.assert_close(lp, torch.tensor(expected))
    # top_p = 0.5 at T = 2: softmax([1, .5, 0, -.5]) = .41, .25, .15, .09: the first two hold .66 >= .5
    p = torch.softmax(logits[0] / 2, -1)
    lp = policy_logprobs(logits.expand(2, -1), torch.tensor([0, 1]), temperature=2.0, top_p=0.5)
    torch.testing.assert_close(lp, torch.log(p[:2] / p[:2].sum()))
    # nothing truncated: log softmax(logits / T)
    torch.testing.assert_close(policy_logprobs(logits, torch.tensor([3]), temperature=0.5),
                               torch.log_softmax(logits / 0.5, -1)[:, 3])


def test_conditional_generation(causal_lm):
    model = SoftPromptModel.from_backbone(causal_lm, ConditionalPromptConfig(num_virtual_tokens=3, condition_dim=4))
    cond = torch.randn(3, 4)
    out = model.generate(TEXTS, max_new_tokens=6, do_sample=False, condition=cond, eos_token_ids=[])
    ids, mask = encode(causal_lm.tokenizer, TEXTS)
    assert torch.equal(out.completion_ids, greedy_without_cache(model, ids, mask, 6, condition=cond))


def test_group_shares_prefill_and_samples_differ(causal_lm):
    model = _model(causal_lm, "prompt")
    out = model.generate(TEXTS[:2], max_new_tokens=8, group_size=4, seed=0, temperature=1.5)
    assert out.prompt_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(set(map(tuple, out.completion_ids[:4].tolist()))) > 1
    # the same seed gives the same samples
    again = model.generate(TEXTS[:2], max_new_tokens=8, group_size=4, seed=0, temperature=1.5)
    assert torch.equal(out.completion_ids, again.completion_ids)
    # a group of G equals G copies of the prompt prefilled separately, greedy
    group = model.generate(TEXTS[:2], max_new_tokens=8, group_size=3, do_sample=False, eos_token_ids=[])
    repeated = model.generate([t for t in TEXTS[:2] for _ in range(3)], max_new_tokens=8, do_sample=False,
                              eos_token_ids=[])
    assert torch.equal(group.completion_ids, repeated.completion_ids)


def test_eos_stops_a_row_and_others_continue(llama):
    model = _model(llama, "prompt")
    free = model.generate(TEXTS, max_new_tokens=10, do_sample=False, eos_token_ids=[])
    eos = int(free.completion_ids[0, 2])  # row 0 emits this at step 2
    rows_without = [i for i in range(3) if eos not in free.completion_ids[i].tolist()]
    out = model.generate(TEXTS, max_new_tokens=10, do_sample=False, eos_token_ids=[eos])
    assert out.finish_reasons[0] == "eos"
    assert out.completion_mask[0].tolist()[:4] == [1, 1, 1, 0]
    assert out.completion_ids[0, 3:].eq(llama.tokenizer.pad_token_id).all()
    for i in rows_without:  # rows that never emit it are unaffected by the others stopping
        assert out.finish_reasons[i] == "length"
        assert torch.equal(out.completion_ids[i], free.completion_ids[i])
        assert_paths_agree(out.logprobs[i], free.logprobs[i], model)


def test_stop_strings_cut_text(llama):
    model = _model(llama, "prompt")
    free = model.generate(TEXTS[:1], max_new_tokens=8, do_sample=False, eos_token_ids=[])
    words = free.texts[0].split()
    assert len(words) >= 3
    out = model.generate(TEXTS[:1], max_new_tokens=8, do_sample=False, eos_token_ids=[], stop_strings=[words[2]])
    assert out.finish_reasons[0] == "stop"
    assert words[2] not in out.texts[0]
    assert out.texts[0].split() == words[:2]


def test_bad_generation_options(llama):
    model = _model(llama, "prompt")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        model.generate(TEXTS, max_new_tokens=0)
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        model.generate(TEXTS, temprature=0.5)
    with pytest.raises(ConfigError, match="non-empty list"):
        model.generate([])
    with pytest.raises(ConfigError, match="group_size"):
        GenerationConfig(group_size=0)
