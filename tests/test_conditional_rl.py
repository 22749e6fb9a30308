"""RLPT's sentence splits, conditions for a conditional prompt, and condition-aware rewards."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_backbone, tiny_llama, tiny_tokenizer
from test_rl import PROMPTS

from softprompt.errors import ConfigError
from softprompt.tasks.data import Example
from softprompt.tasks.prompts import PromptsSection, load_prompts, with_conditions

COLA = [("the movie was very good and i loved it", 1), ("a story with actors that was so boring", 1),
        ("good", 1), ("the plot it not very", 0), ("this film is really fun and the actors are great", 1),
        ("i hated it but the story was good", 1), ("movie the was plot a is", 0), ("so bad", 0)]


def cola_dir(tmp_path):
    root = tmp_path / "glue" / "CoLA"
    root.mkdir(parents=True)
    lines = [f"src\t{label}\t\t{text}" for text, label in COLA]
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    (root / "dev.tsv").write_text("\n".join(lines[:4]) + "\n")
    return tmp_path / "glue"


def test_sentence_splits_cut_each_sentence_within_the_token_budgets(tmp_path):
    tok = tiny_tokenizer()
    s = PromptsSection(source="sentence_splits", task="cola", data_dir=str(cola_dir(tmp_path)), min_prompt_tokens=2,
                       min_completion_tokens=3, label_scores=[0.25, 1.0], num_train=100, num_eval=10)
    train, evaluation = load_prompts(s, seed=0, tokenizer=lambda: tok)
    sentences = {t for t, _ in COLA}
    assert len(train) == 6  # "good" and "so bad" are shorter than 2 + 3 tokens
    for e in train:
        n_prompt, n_ref = len(e.text.split()), len(e.extra["reference"].split())
        assert n_prompt >= 2 and n_ref >= 3
        sentence = e.extra["sentence"]  # as read: first letter capitalised
        assert sentence.lower() in sentences
        whole = tok.decode(tok(sentence, add_special_tokens=False)["input_ids"])  # no token lost at the cut
        assert f"{e.text} {e.extra['reference']}" == whole
        assert e.extra["score"] == (1.0 if dict(COLA)[sentence.lower()] == 1 else 0.25)
    again, _ = load_prompts(s, seed=0, tokenizer=lambda: tok)
    other, _ = load_prompts(s, seed=5, tokenizer=lambda: tok)
    assert [e.text for e in again] == [e.text for e in train]  # seeded
    assert sorted(e.text for e in other) != sorted(e.text for e in train)  # another seed, other cuts
    assert len(evaluation) == 3  # dev: 4 rows, 3 long enough
    with pytest.raises(ConfigError, match="label_scores.*one score per class"):
        load_prompts(PromptsSection(source="sentence_splits", data_dir=str(tmp_path / "glue"), label_scores=[1.0]),
                     tokenizer=lambda: tok)


def test_conditions_are_balanced_for_training_and_crossed_for_evaluation():
    train = [Example(text=f"p{i}", index=i) for i in range(10)]
    evaluation = [Example(text=f"q{i}", index=i) for i in range(3)]
    t, e = with_conditions(train, evaluation, ["negative", "positive"], seed=0)
    assert sorted(x.extra["condition"] for x in t) == ["negative"] * 5 + ["positive"] * 5
    assert [(x.text, x.extra["condition"]) for x in e[:2]] == [("q0", "negative"), ("q0", "positive")]
    assert len(e) == 6 and len({x.index for x in e}) == 6


def test_onehot_and_embedding_conditioners():
    from softprompt.experiment import ConditionSection
    from softprompt.tasks.conditions import Conditioner

    c = Conditioner(ConditionSection(field="condition", encoder="onehot", values=["neg", "pos"]))
    out = c([Example(text="a", extra={"condition": "pos"}), Example(text="b", extra={"condition": "neg"})])
    assert torch.equal(out, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ConfigError, match="'meh' is not one of"):
        c([Example(text="a", extra={"condition": "meh"})])
    with pytest.raises(ConfigError, match="has no such field"):
        c([Example(text="a")])
    with pytest.raises(ConfigError, match="needs condition.field"):
        Conditioner(ConditionSection())


def test_classifier_reward_reads_each_examples_target_and_signs_flip_scores(tmp_path):
    from softprompt.rewards import RewardContext
    from softprompt.rewards.models import (
        ClassifierReward,
        ClassifierRewardConfig,
        RewardModelConfig,
        RewardModelReward,
    )

    model = save_backbone(tiny_llama(), tmp_path / "m")
    reward = ClassifierReward(ClassifierRewardConfig(model=str(model), task="sst2", target_field="condition"),
                              RewardContext())
    ex = [Example(text="x", extra={"condition": "positive"}), Example(text="x", extra={"condition": "negative"})]
    p = reward(["the movie", "the movie"], [" was good", " was good"], ex)
    assert p[0] + p[1] == pytest.approx(1.0, abs=1e-5) and p[0] != pytest.approx(0.5)  # p(pos) and p(neg)

    signed = RewardModelReward.__new__(RewardModelReward)
    signed.config = RewardModelConfig(run="x", sign_field="condition")
    signed._scores = lambda *a: [0.75, 0.75]
    assert signed(["a", "a"], ["b", "b"], ex).tolist() == [0.75, -0.75]
    signed.config = RewardModelConfig(run="x", sign_field="condition", signs={"positive": 1.0})
    with pytest.raises(ConfigError, match="'negative' has no entry in signs"):
        signed(["a", "a"], ["b", "b"], ex)


def test_conditional_prompt_trains_with_rl_and_the_condition_reaches_generation(tmp_path):
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    model = save_backbone(tiny_llama(), tmp_path / "m")
    raw = {"model": str(model), "output_dir": str(tmp_path / "runs"), "run_id": "c",
           "adapter": {"type": "conditional_prompt", "num_virtual_tokens": 3, "condition_dim": 2, "hidden_dim": 8,
                       "init": "random", "init_seed": 0},
           "condition": {"field": "condition", "encoder": "onehot", "values": ["negative", "positive"]},
           "method": {"name": "grpo", "group_size": 4},
           "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2, "conditions": ["negative", "positive"]},
           "generation": {"max_new_tokens": 4, "eval_samples": 2},
           "rewards": [{"name": "classifier", "model": str(model), "task": "sst2", "target_field": "condition"}],
           "judge": {"name": "classifier", "model": str(model), "task": "sst2", "target_field": "condition"},
           "train": {"batch": 3, "max_steps": 2, "lr": 0.1}}
    trainer = make_trainer(from_dict(raw), progress=False)
    mlp_before = [p.detach().clone() for p in trainer.work.module.model.adapter.mlp.parameters()]
    seen = []
    generate = trainer.work.module.model.generate

    def spy(prompts, config=None, condition=None, **kw):
        seen.append((trainer.work.module.model.adapter is not None, condition))
        return generate(prompts, config, condition=condition, **kw)
    trainer.work.module.model.generate = spy
    trainer.fit(progress=False)
    with_prompt = [c for has_adapter, c in seen if has_adapter]
    assert len(with_prompt) >= 4 and all(c is not None and c.shape[1] == 2 for c in with_prompt)
    assert all(c is None for has_adapter, c in seen if not has_adapter)  # the base model's evaluation
    assert any(not torch.equal(a, b) for a, b in zip(mlp_before, trainer.work.module.model.adapter.mlp.parameters()))
    rows = trainer.run.read_jsonl("predictions.jsonl")
    assert len(rows) == 2 * 2 * 2  # 2 held-out prompts x both conditions x 2 samples
    assert sorted(r["condition"] for r in rows) == ["negative"] * 4 + ["positive"] * 4
    # the judge reads each row's target: the rate each target was met, from the rows by hand
    metrics = json.loads((trainer.run.path / "metrics.json").read_text())
    for target in ("negative", "positive"):
        judged = [r["judge"] > 0.5 for r in rows if r["condition"] == target]
        assert metrics[f"eval_condition_met/{target}"] == pytest.approx(sum(judged) / len(judged))
    assert metrics["eval_judge_positive_rate"] == pytest.approx(
        (metrics["eval_condition_met/negative"] + metrics["eval_condition_met/positive"]) / 2)
    # a condition vector of the wrong size is refused when the run is built
    raw["adapter"]["condition_dim"] = 5
    raw["run_id"] = "d"
    with pytest.raises(ConfigError, match="condition_dim=5"):
        make_trainer(from_dict(raw), progress=False)


# -- eval-gen on the runs these produce ------------------------------------------------------------


def _train(raw: dict):
    """Train a config for its few steps into a real run folder; the folder's path."""
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    trainer = make_trainer(from_dict(raw), progress=False)
    trainer.fit(progress=False)
    return trainer.run.path


def test_eval_gen_on_an_rlpt_run_cuts_its_held_out_sentences_with_the_policys_tokenizer(tmp_path):
    import json

    from softprompt.commands.cli import main

    model = save_backbone(tiny_llama(vocab_size=50), tmp_path / "m")
    run = _train({"model": str(model), "output_dir": str(tmp_path / "runs"), "run_id": "rlpt",
                  "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "vocab", "init_seed": 0},
                  "method": {"name": "grpo", "group_size": 2},
                  "prompts": {"source": "sentence_splits", "task": "cola", "data_dir": str(cola_dir(tmp_path)),
                              "min_prompt_tokens": 2, "min_completion_tokens": 3, "label_scores": [0.25, 1.0],
                              "num_eval": 10},
                  "generation": {"max_new_tokens": 3, "eval_samples": 2},
                  "rewards": [{"name": "perplexity", "zscore": False}],
                  "train": {"batch": 3, "max_steps": 2, "lr": 0.1}})
    assert (run / "checkpoints").exists()
    assert main(["eval-gen", str(run), "--n", "2", "--k", "1", "--verifier", "reward>=-1e9",
                 "--embedding-model", "none"]) == 0
    rows = [json.loads(line) for line in (run / "eval_gen" / "generations.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]  # training's
    assert len(rows) == 3 * 2 == len(held_out)  # dev: 4 sentences, 3 long enough, 2 samples each
    assert {r["prompt"] for r in rows} == {r["prompt"] for r in held_out}  # the same cuts
    assert all(r["reward"] < 0 for r in rows)  # -perplexity under the frozen backbone


def test_eval_gen_on_a_conditional_run_feeds_and_records_each_condition(tmp_path, monkeypatch):
    import json

    from softprompt.commands.eval_gen import eval_gen_run
    from softprompt.modeling.model import SoftPromptModel

    model = save_backbone(tiny_llama(), tmp_path / "m")
    run = _train({"model": str(model), "output_dir": str(tmp_path / "runs"), "run_id": "cond",
                  "adapter": {"type": "conditional_prompt", "num_virtual_tokens": 3, "condition_dim": 2,
                              "hidden_dim": 8, "init": "random", "init_seed": 0},
                  "condition": {"field": "condition", "encoder": "onehot", "values": ["negative", "positive"]},
                  "method": {"name": "grpo", "group_size": 2},
                  "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2,
                              "conditions": ["negative", "positive"]},
                  "generation": {"max_new_tokens": 3, "eval_samples": 2},
                  "rewards": [{"name": "classifier", "model": str(model), "task": "sst2",
                               "target_field": "condition"}],
                  "train": {"batch": 3, "max_steps": 1, "lr": 0.1}})
    seen = []
    generate = SoftPromptModel.generate

    def spy(self, prompts, config=None, condition=None, **kw):
        seen.append((self.adapter is not None, list(prompts), condition))
        return generate(self, prompts, config, condition=condition, **kw)
    monkeypatch.setattr(SoftPromptModel, "generate", spy)

    def rows_of(out):
        return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]

    _, out = eval_gen_run(str(run), n=2, ks="1", embedding_model=None, progress=False)
    rows = rows_of(out)
    assert len(rows) == 2 * 2 * 2  # 2 held-out prompts x both conditions x 2 samples
    assert sorted(r["condition"] for r in rows) == ["negative"] * 4 + ["positive"] * 4
    (has_adapter, prompts, condition), = seen
    onehot = {"negative": [1.0, 0.0], "positive": [0.0, 1.0]}
    assert has_adapter and condition.tolist() == [onehot[r["condition"]] for r in rows[::2]]
    assert [r["prompt"] for r in rows[::2]] == prompts
    assert len({(r["prompt"], r["condition"]) for r in rows}) == 4
    # the base model: no condition reaches generation, the rows still say which it was
    seen.clear()
    _, out = eval_gen_run(str(run), n=2, ks="1", base=True, embedding_model=None, progress=False)
    assert seen[0][0] is False and seen[0][2] is None
    assert sorted(r["condition"] for r in rows_of(out)) == ["negative"] * 4 + ["positive"] * 4
    # a prompt file without the condition field: each prompt under every condition, as held-out prompts are
    (tmp_path / "p.txt").write_text("the plot was\nit is\n")
    seen.clear()
    _, out = eval_gen_run(str(run), prompts=str(tmp_path / "p.txt"), n=2, ks="1", embedding_model=None,
                          progress=False, out=str(tmp_path / "file_out"))
    rows = rows_of(out)
    assert [(r["prompt"], r["condition"]) for r in rows[::2]] == [
        ("the plot was", "negative"), ("the plot was", "positive"), ("it is", "negative"), ("it is", "positive")]
    assert seen[0][2].tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


# -- each condition on its own prompt --------------------------------------------------------------


def _conditional_rl(tmp_path, **adapter):
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import build_rl

    raw = {"model": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 0,
           "adapter": {"type": "conditional_prompt", "num_virtual_tokens": 2, "condition_dim": 2, "hidden_dim": 8,
                       "init": "random", "init_seed": 0, **adapter},
           "condition": {"field": "condition", "encoder": "onehot", "values": ["negative", "positive"]},
           "method": {"name": "grpo", "group_size": 4},
           "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2, "conditions": ["negative", "positive"]},
           "generation": {"max_new_tokens": 5, "eval_samples": 1},
           "train": {"batch": 6, "epochs": 3, "lr": 0.3, "warmup_ratio": 0.0, "scheduler": "constant",
                     "eval_every": 0}}

    def wanted_word(prompts, completions, examples):  # positive: say "great"; negative: say "bad"
        word = {"positive": "great", "negative": "bad"}
        return [c.split().count(word[e.extra["condition"]]) / max(len(c.split()), 1)
                for c, e in zip(completions, examples)]
    config = from_dict(raw)
    work, data = build_rl(config, rewards=[wanted_word], backbone=tiny_llama(vocab_size=50))
    return config, work, data


def _prompts(work) -> dict[str, torch.Tensor]:
    vectors = work.conditioner.vectors(["negative", "positive"])
    with torch.no_grad():
        both = work.module.model.adapter.prompt_embeddings(2, vectors)
    return {"negative": both[0], "positive": both[1]}


def test_condition_inits_start_each_condition_on_its_own_prompt(tmp_path):
    _, work, _ = _conditional_rl(tmp_path, condition_inits={"negative": "text:bad boring", "positive": "text:great fun"})
    tok, embed = work.module.model.tokenizer, work.module.model.backbone.input_embeddings()
    prompts = _prompts(work)
    for condition, text in (("negative", "bad boring"), ("positive", "great fun")):
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
        torch.testing.assert_close(prompts[condition], embed(ids), atol=1e-4, rtol=0)
    # the default: every condition starts within 10% of base's scale of the same prompt
    _, plain, _ = _conditional_rl(tmp_path / "plain")
    same = _prompts(plain)
    base = plain.module.model.adapter.base.detach()
    assert (same["positive"] - same["negative"]).norm() < 0.1 * base.norm()
    assert (prompts["positive"] - prompts["negative"]).norm() > 0.5 * base.norm()


def test_a_few_steps_on_a_condition_dependent_reward_move_the_two_prompts_apart(tmp_path):
    from softprompt.training.trainer import Trainer

    config, work, data = _conditional_rl(tmp_path)
    before = _prompts(work)
    Trainer(config, work, data, run=None).fit(progress=False)
    after = _prompts(work)
    gap = [(p["positive"] - p["negative"]).norm().item() for p in (before, after)]
    assert gap[1] > 2 * gap[0], gap


def test_condition_inits_are_checked():
    from softprompt.adapters.conditional import ConditionalPromptConfig

    with pytest.raises(ConfigError, match="condition_inits"):
        ConditionalPromptConfig(condition_inits={"a": "text"})  # neither random, vocab nor text:...
