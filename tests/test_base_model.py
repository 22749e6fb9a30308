"""The base model when training changes the backbone in place (LoRA, num_layers_unfrozen): the
perplexity reward, eval_perplexity, the base-model evaluation and the ``reference: none`` KL all
run on the model as it was loaded, however far the policy moved."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from helpers import encode
from test_rl import rl_config

from softprompt.modeling.model import SoftPromptModel
from softprompt.modeling.scoring import completion_nll, completion_perplexity
from softprompt.training.assemble import build_rl
from softprompt.training.rollout import make_rollout
from softprompt.training.trainer import Trainer

TEXTS = (["the movie was", "i loved it and", "this plot is"], ["great fun and good", "not very boring", "so bad"])
REWARDS = [{"name": "perplexity", "zscore": False, "max_perplexity": 1e9}, {"name": "regex_match", "pattern": "great"}]


def saved_lora(tmp_path):
    """A LoRA adapter directory whose update is not zero (B moved away from its zero init)."""
    from softprompt.adapters import LoRAConfig

    torch.manual_seed(1)
    model = SoftPromptModel.from_backbone(tiny_llama(vocab_size=50), LoRAConfig(r=2))
    for p in model.trainable_parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    return model.save_pretrained(tmp_path / "lora_start")


CASES = {
    "lora": ({"type": "lora", "r": 2}, {"name": "grpo", "group_size": 4, "beta": 0.1, "reference": "none"}, 0.05),
    "lora_init_from": ({"type": "lora", "r": 2}, {"name": "grpo", "group_size": 4, "beta": 0.1, "reference": "none"},
                       0.05),
    "unfrozen": ({"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
                 {"name": "ppo", "group_size": 2, "kl_coef": 0.1, "reference": "none", "num_layers_unfrozen": 1},
                 0.3),
}


def rl_work(tmp_path, case: str):
    adapter, method, lr = CASES[case]
    extra = {"init_from": str(saved_lora(tmp_path))} if case == "lora_init_from" else {}
    cfg = rl_config(tmp_path, method, adapter=adapter, rewards=REWARDS, **extra)
    cfg.train.epochs, cfg.train.lr, cfg.train.head_lr = 3, lr, lr
    backbone = tiny_llama(vocab_size=50)
    work, data = build_rl(cfg, backbone=backbone)
    return cfg, work, data


def base_numbers(work, data, ro) -> dict:
    """What must not move: the perplexity reward on fixed texts, the reference-none log-probs of
    a fixed rollout, and the base-model evaluation."""
    prompts, completions = TEXTS
    base = {k: v for k, v in work.evaluate_base(data.eval).items() if "runtime" not in k and "per_second" not in k}
    return {"perplexity": work.rewards.parts[0].fn(prompts, completions, [None] * 3),
            "reference": work.reference.logprobs(ro), "base": base}


@pytest.mark.parametrize("case", list(CASES))
def test_the_base_model_does_not_move_while_the_policy_trains(tmp_path, case):
    cfg, work, data = rl_work(tmp_path, case)
    ro = make_rollout(work.module, data.train[:3], work.gen, work.rewards, work.reference, values=work.values)
    with torch.no_grad():
        policy_before = work.module.logprobs(ro)[0]
    groups = {"adapter": work.module.model.trainable_parameters(), "unfrozen": work.module.unfrozen}
    weights_before = {k: [p.detach().clone() for p in ps] for k, ps in groups.items()}
    before = base_numbers(work, data, ro)
    trainer = Trainer(cfg, work, data, run=None)
    trainer.work.evaluate_before = False
    trainer.fit(progress=False)

    # the policy moved: its weights (LoRA or prompt, and the unfrozen block) and its log-probs
    assert (len(groups["unfrozen"]) > 0) == (case == "unfrozen")
    for key, params in groups.items():
        assert not params or any(not torch.equal(p, w) for p, w in zip(params, weights_before[key])), key
    with torch.no_grad():
        assert (work.module.logprobs(ro)[0] - policy_before).abs().max() > 1e-3
    # the base model did not, and it is the model as loaded
    after = base_numbers(work, data, ro)
    torch.testing.assert_close(after["perplexity"], before["perplexity"])
    torch.testing.assert_close(after["reference"], before["reference"])
    assert after["base"] == pytest.approx(before["base"]), (before["base"], after["base"])
    loaded = SoftPromptModel(tiny_llama(vocab_size=50))
    torch.testing.assert_close(-after["perplexity"].float(), completion_perplexity(loaded, *TEXTS), rtol=1e-4,
                               atol=1e-4)
    expected_ref = loaded.sequence_logprobs(ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    torch.testing.assert_close(after["reference"], expected_ref, atol=1e-5, rtol=0)
    # eval_perplexity scores the policy's samples under the model as loaded
    metrics, rows = work.evaluate(data.eval)
    nll, count = completion_nll(loaded, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert metrics["eval_perplexity"] == pytest.approx(float(torch.exp(nll.sum() / count.sum())), rel=1e-4)


def test_init_from_a_lora_adapter_loads_its_weights(tmp_path):
    """init_from reads the saved tensors: it builds no second LoRA on the backbone (which LoRA refuses)."""
    from softprompt.adapters import load_adapter

    source = saved_lora(tmp_path)
    _, work, _ = rl_work(tmp_path, "lora_init_from")
    saved = load_adapter(source, tiny_llama(vocab_size=50)).adapter_state_dict()
    got = work.module.model.adapter.adapter_state_dict()
    assert set(got) == set(saved) and all(torch.equal(got[k], saved[k]) for k in saved)


# -- unfrozen blocks are part of the trained model ----------------------------------------------


def trained_unfrozen_run(tmp_path):
    """A PPO run with the top block unfrozen, trained into a run folder; its trainer."""
    from conftest import save_backbone

    from softprompt.training.assemble import make_trainer

    save_backbone(tiny_llama(vocab_size=50), tmp_path / "model")
    adapter, method, _ = CASES["unfrozen"]
    cfg = rl_config(tmp_path, method, adapter=adapter, rewards=REWARDS, run_id="unfrozen")
    cfg.model = str(tmp_path / "model")
    cfg.train.epochs, cfg.train.lr, cfg.train.head_lr, cfg.train.eval_every = 2, 0.3, 0.3, 0
    trainer = make_trainer(cfg, progress=False)
    trainer.fit(progress=False)
    return trainer


def test_unfrozen_blocks_are_saved_and_loaded_with_the_adapter(tmp_path):
    import json

    from softprompt.errors import AdapterLoadError
    from softprompt.modeling.backbones import load_backbone
    from softprompt.modeling.peft_interop import export_peft
    from softprompt.storage import load_tensors, save_tensors

    layers_file = "backbone_layers.safetensors"  # the adapter directory's file of trained blocks
    trainer = trained_unfrozen_run(tmp_path)
    run = trainer.run.path
    ids, mask = encode(trainer.clf.model.tokenizer, ["the movie was", "i loved it and so"])
    with torch.no_grad():
        trained = trainer.clf.model(ids, mask).logits
        base = SoftPromptModel(load_backbone(str(tmp_path / "model")))(ids, mask).logits
    loaded = SoftPromptModel.from_pretrained(run)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask).logits, trained)
        with loaded.untouched():  # the base model is still there: the backbone as loaded
            torch.testing.assert_close(loaded(ids, mask).logits, base)
    with pytest.raises(AdapterLoadError, match=r"this model also trained transformer blocks \[1\]"):
        export_peft(loaded, tmp_path / "peft")
    best = run / "checkpoints" / "best"
    assert json.loads((best / "softprompt_adapter.json").read_text())["backbone_layers"]["layers"] == [1]
    assert set(load_tensors(best / "head.safetensors")) == {"value_head.weight", "value_head.bias"}
    fresh = dict(load_backbone(str(tmp_path / "model")).model.named_parameters())
    blocks = load_tensors(best / layers_file)
    assert blocks and all(k.startswith("model.layers.1.") for k in blocks)
    assert any(not torch.equal(v, fresh[k]) for k, v in blocks.items())  # training changed the block

    # a run folder written before the blocks moved here kept them in head.safetensors
    meta = json.loads((best / "softprompt_adapter.json").read_text())
    del meta["backbone_layers"]
    (best / "softprompt_adapter.json").write_text(json.dumps(meta))
    (best / layers_file).unlink()
    head = load_tensors(best / "head.safetensors")
    save_tensors(best / "head.safetensors", {**head, **{f"backbone.{k}": v for k, v in blocks.items()}})
    with torch.no_grad():
        torch.testing.assert_close(SoftPromptModel.from_pretrained(run)(ids, mask).logits, trained)

    # blocks that do not fit the backbone are refused, naming the file
    (best / "softprompt_adapter.json").write_text(json.dumps({**meta, "backbone_layers": {"layers": [1]}}))
    save_tensors(best / layers_file, {**blocks, "model.layers.1.extra.weight": torch.zeros(2)})
    with pytest.raises(AdapterLoadError, match=r"backbone_layers.safetensors: the saved transformer blocks do not "
                                                r"fit this backbone \(missing \[\], unexpected \['model.layers.1.extra"):
        SoftPromptModel.from_pretrained(run)
