"""method.name=dpo: TRL's losses by hand, the objective against log-probs computed one sequence at a
time, the reference computed once per pair, and a run that learns its preferences."""

import json
import math

import pytest
import torch
from conftest import save_backbone, tiny_llama

from softprompt import SoftPromptModel
from softprompt.errors import ConfigError
from softprompt.experiment import from_dict
from softprompt.objectives.dpo import DPOConfig, dpo_loss


def test_dpo_losses_by_hand():
    c, r, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    logits = (-3 + 4) - (-5 + 4.5)  # 1.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    loss, m = dpo_loss(c, r, rc, rr, DPOConfig(beta=0.1))
    assert float(loss) == pytest.approx(-math.log(sig(0.15)))
    assert m["rewards/chosen"] == pytest.approx(0.1) and m["rewards/rejected"] == pytest.approx(-0.05)
    assert m["rewards/margins"] == pytest.approx(0.15) and m["rewards/accuracies"] == 1.0
    loss, _ = dpo_loss(c, r, rc, rr, DPOConfig(beta=0.1, label_smoothing=0.2))
    assert float(loss) == pytest.approx(-0.8 * math.log(sig(0.15)) - 0.2 * math.log(sig(-0.15)))
    loss, _ = dpo_loss(c, r, rc, rr, DPOConfig(beta=0.5, loss_type="hinge"))
    assert float(loss) == pytest.approx(1 - 0.5 * logits)
    loss, _ = dpo_loss(c, r, rc, rr, DPOConfig(beta=0.5, loss_type="ipo"))
    assert float(loss) == pytest.approx((logits - 1 / (2 * 0.5)) ** 2)


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PAIRS = [{"prompt": "the movie was", "chosen": "great fun", "rejected": "so boring"},
         {"prompt": "i thought it was", "chosen": "really good", "rejected": "very bad"},
         {"prompt": "the actors were", "chosen": "wonderful", "rejected": "terrible"},
         {"prompt": "this story is", "chosen": "so good", "rejected": "awful"}]


def dpo_raw(tmp_path, model_dir, **method):
    path = write_pairs(tmp_path / "prefs.jsonl", PAIRS)
    return {"model": str(model_dir), "output_dir": str(tmp_path / "runs"), "run_id": "r",
            "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
            "method": {"name": "dpo", "beta": 0.5, **method},
            "preferences": {"file": str(path), "eval_file": str(path)},
            "train": {"batch": 2, "epochs": 4, "lr": 0.3, "warmup_ratio": 0.0, "report_to": "none"}}


def one_logp(model, prompt: str, response: str) -> float:
    """log p(response + eos | prompt), one unpadded sequence, by hand."""
    tok = model.tokenizer
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = model(torch.tensor([p + r])).logits[0].float().log_softmax(-1)
    return sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(r))


def test_the_objective_matches_log_probs_computed_one_sequence_at_a_time(tmp_path):
    from softprompt.objectives.dpo import DPO
    from softprompt.training.assemble import build_dpo

    backbone = tiny_llama()
    work, data = build_dpo(from_dict(dpo_raw(tmp_path, "tiny")), backbone=backbone)
    model = work.module.model
    with torch.no_grad():
        model.adapter.embeddings.add_(torch.randn_like(model.adapter.embeddings))
    pairs = data.train[:2]
    out = DPO(DPOConfig(beta=0.5))(work.inputs(pairs, 0, 0, "cpu")[0])
    base = SoftPromptModel(backbone)  # reference: none, the model without the prompt
    expected = []
    for p in pairs:
        z = (one_logp(model, p.context, p.chosen) - one_logp(base, p.context, p.chosen)) - \
            (one_logp(model, p.context, p.rejected) - one_logp(base, p.context, p.rejected))
        expected.append(-math.log(1 / (1 + math.exp(-0.5 * z))))
    assert float(out.loss) == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_a_dpo_run_learns_its_pairs_and_computes_the_reference_once_per_pair(tmp_path):
    from softprompt.training.assemble import make_trainer

    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    trainer = make_trainer(from_dict(dpo_raw(tmp_path, model_dir, reference="initial_prompt")), progress=False)
    calls = []
    active = trainer.work.reference.active
    trainer.work.reference.active = lambda: calls.append(1) or active()
    metrics = trainer.fit(progress=False)
    assert metrics["before_eval_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at the start
    assert metrics["eval_loss"] < math.log(2) - 0.05
    assert metrics["eval_rewards/accuracies"] > metrics["before_eval_rewards/accuracies"] - 1e-9
    assert metrics["eval_rewards/margins"] > 0
    assert len(trainer.work._reference_logps) == 8  # 4 training pairs, 4 held out (the same texts, other objects)
    assert len(calls) <= 3  # the first batches and the first evaluation; never again
    assert trainer.run.path.parts[-3:] == ("prefs", "dpo", "r")


def test_pairs_without_a_context_need_a_prompt(tmp_path):
    from softprompt.training.assemble import build_dpo

    raw = dpo_raw(tmp_path, "tiny")
    write_pairs(tmp_path / "prefs.jsonl", [{"chosen": "great fun", "rejected": "so boring"}] * 3)
    with pytest.raises(ConfigError, match="has no context .* set method.empty_context_prompt"):
        build_dpo(from_dict(raw), backbone=tiny_llama())
