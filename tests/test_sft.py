"""method.name=sft: the loss on response tokens only (hand-computed), assistant turns only in a
conversation, and a run that lowers its held-out loss."""

import json

import pytest
import torch
from conftest import save_backbone, tiny_llama

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.errors import DataError
from softprompt.experiment import from_dict
from softprompt.modeling.generation import GenerationConfig
from softprompt.modeling.sft_data import sft_batch
from softprompt.objectives.sft import SFT, SFTConfig, SFTInputs
from softprompt.tasks.data import Example
from softprompt.training.rollout import Policy

TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} . {% endfor %}"
            "{% if add_generation_prompt %}assistant {% endif %}")


def model_with_prompt():
    torch.manual_seed(0)
    return SoftPromptModel.from_backbone(tiny_llama(), PromptTuningConfig(num_virtual_tokens=3, init="random"))


def test_sft_loss_is_the_mean_nll_of_the_response_tokens_by_hand():
    model = model_with_prompt()
    tok = model.tokenizer
    examples = [Example("the movie was", extra={"response": "great fun"}),
                Example("i hated it", index=1, extra={"response": "a boring plot and bad actors"})]
    batch = sft_batch(tok, examples, GenerationConfig(), "response", 64)
    got = SFT(SFTConfig())(SFTInputs(batch, Policy(model))).loss
    nll, count = 0.0, 0
    for e in examples:  # one at a time: prompt (with its special tokens) + response + eos, unpadded
        prompt = tok(e.text)["input_ids"]
        response = tok(e.extra["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logp = model(ids).logits[0].float().log_softmax(-1)
        for j, token in enumerate(response):  # the logit at position t predicts token t + 1
            nll -= float(logp[len(prompt) - 1 + j, token])
            count += 1
    assert count == int(batch.loss_mask.sum())
    assert float(got) == pytest.approx(nll / count, rel=1e-5)


def test_a_conversation_learns_its_assistant_turns_only():
    tok = tiny_llama().tokenizer
    tok.chat_template = TEMPLATE
    conversation = [{"role": "user", "content": "the movie was"}, {"role": "assistant", "content": "great fun"},
                    {"role": "user", "content": "i loved it"}, {"role": "assistant", "content": "so good"}]
    batch = sft_batch(tok, [Example("i loved it", extra={"conversation": conversation})],
                      GenerationConfig(chat=True), "response", 64)
    prompt = tok.decode(batch.prompt_ids[0][batch.prompt_mask[0].bool()])
    assert prompt.split() == tok.decode(tok("user the movie was . assistant")["input_ids"],
                                        skip_special_tokens=False).split()
    ids, mask = batch.completion_ids[0], batch.loss_mask[0].bool()
    learned = ids[mask].tolist()
    assert learned == tok("great fun . so good .", add_special_tokens=False)["input_ids"]  # with the end-of-turn mark
    assert ids[~mask & batch.completion_mask[0].bool()].tolist() == \
        tok("user i loved it . assistant", add_special_tokens=False)["input_ids"]


def test_missing_response_is_a_data_error_before_the_model_loads(tmp_path):
    from softprompt.training.assemble import build_sft

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "the movie was", "response": "great"}\n{"prompt": "i hated it"}\n')
    raw = {"model": "no-such-model", "method": {"name": "sft"},
           "prompts": {"source": "file", "file": str(path), "eval_file": str(path)}}
    with pytest.raises(DataError, match=r"SFT example 1 \('i hated it'\) has no 'response'"):
        build_sft(from_dict(raw))


def test_an_sft_run_lowers_the_held_out_loss(tmp_path):
    from softprompt.training.assemble import make_trainer

    rows = [{"prompt": p, "response": r} for p, r in [("the movie was", "great fun"), ("i hated it", "so boring"),
                                                      ("a story", "really good"), ("the actors", "very bad")]]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {"model": str(save_backbone(tiny_llama(), tmp_path / "model")), "output_dir": str(tmp_path / "runs"),
           "run_id": "r", "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random",
                                      "init_seed": 0},
           "method": {"name": "sft"}, "prompts": {"source": "file", "file": str(path), "eval_file": str(path)},
           "train": {"batch": 2, "epochs": 4, "lr": 0.3, "warmup_ratio": 0.0, "report_to": "none"}}
    trainer = make_trainer(from_dict(raw), progress=False)
    metrics = trainer.fit(progress=False)
    assert metrics["eval_loss"] < metrics["before_eval_loss"] - 0.1
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-6)
    assert trainer.run.path.parts[-3:] == ("file", "sft", "r")
    data = json.loads((trainer.run.path / "data.json").read_text())
    assert data["train_examples"] == 4 and data["train_truncated"] == 0


def test_polychromic_starts_from_an_sft_run_with_init_from(tmp_path):
    from softprompt.training.assemble import build_rl, make_trainer

    path = tmp_path / "sft.jsonl"
    path.write_text('{"prompt": "the movie was", "response": "great fun"}\n{"prompt": "i hated it", '
                    '"response": "so boring"}\n')
    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    common = {"model": str(model_dir), "output_dir": str(tmp_path / "runs"),
              "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
              "prompts": {"source": "file", "file": str(path), "eval_file": str(path)}}
    sft = make_trainer(from_dict({**common, "run_id": "sft", "method": {"name": "sft"},
                                  "train": {"batch": 2, "epochs": 2, "lr": 0.3, "report_to": "none"}}),
                       progress=False)
    sft.fit(progress=False)
    trained = SoftPromptModel.from_pretrained(str(sft.run.path)).adapter.embeddings
    poly = {**common, "method": {"name": "polychromic", "num_generations": 4, "set_size": 2}}
    no_reward = [lambda p, c, e: [0.0] * len(c)]
    work, _ = build_rl(from_dict({**poly, "init_from": str(sft.run.path)}), rewards=no_reward)
    fresh, _ = build_rl(from_dict(poly), rewards=no_reward)
    assert torch.equal(work.module.model.adapter.embeddings, trained)
    assert (trained - fresh.module.model.adapter.embeddings).abs().max() > 1e-3  # SFT moved it from the init
