"""Reward models: preference readers, the pairwise loss, training a tiny encoder, the RL reward."""

import json
import random

import pytest
import torch
from conftest import WORDS, save_backbone, tiny_bert

from softprompt.commands.cli import main
from softprompt.errors import ConfigError, DataError
from softprompt.experiment import from_dict
from softprompt.objectives.pairwise import pairwise_loss
from softprompt.tasks.preferences import (
    pairs_from_labels,
    read_preferences,
    split_pairs,
    write_preferences,
)
from softprompt.training.assemble import make_trainer

SEED_HEADER = ["context_messages", "policy_response", "reference_response", "human_eval"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def seed_row(policy="the movie was great", reference="bad", verdict=0, context="[]"):
    return {"context_messages": context, "policy_response": policy, "reference_response": reference,
            "human_eval": verdict}


# ----------------------------------------------------------------------------- the loss


def test_pairwise_loss_matches_hand_computed_values():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # -log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(-1) = log(1 + e) = 1.313262
    assert float(pairwise_loss(chosen, rejected)) == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    # margin 0.5: -log sigmoid(0.5) = 0.474077; -log sigmoid(-1.5) = 1.701413
    assert float(pairwise_loss(chosen, rejected, 0.5)) == pytest.approx((0.474077 + 1.701413) / 2, abs=1e-5)


def test_negative_margin_is_refused():
    with pytest.raises(ConfigError, match="margin"):
        from_dict({"method": {"name": "reward_pairwise", "margin": -1}})


# ----------------------------------------------------------------------------- readers


def test_seed_layout_orders_pairs_by_human_eval_and_skips_2_and_3(tmp_path):
    messages = json.dumps([{"role": "system", "content": "be kind"}, {"role": "user", "content": "how was it?"}])
    path = write_jsonl(tmp_path / "p.jsonl", [
        seed_row("policy A", "reference A", 0, messages),
        seed_row("policy B", "reference B", 1),
        seed_row("policy C", "reference C", 2),
        seed_row("policy D", "reference D", 3),
        seed_row("policy E", "reference E", "1"),
    ])
    data = read_preferences(path)
    assert data.layout == "seed" and data.skipped == 2
    assert [(p.chosen, p.rejected) for p in data.pairs] == [
        ("policy A", "reference A"), ("reference B", "policy B"), ("reference E", "policy E")]
    assert data.pairs[0].context == "system: be kind\nuser: how was it?"
    assert [p.line for p in data.pairs] == [1, 2, 5]


def test_excel_file_written_with_openpyxl_is_read(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(SEED_HEADER)
    sheet.append(["[{'role': 'user', 'content': 'hi'}]", "hello there", "go away", 0])  # a Python-literal list
    for row, values in ((4, ["[]", "meh", "a kind reply", 1.0]), (5, ["[]", "x", "y", 3])):  # row 3 left blank
        for column, value in enumerate(values, 1):
            sheet.cell(row=row, column=column, value=value)
    book.save(tmp_path / "prefs.xlsx")
    data = read_preferences(tmp_path / "prefs.xlsx")
    assert [(p.context, p.chosen, p.rejected, p.line) for p in data.pairs] == [
        ("user: hi", "hello there", "go away", 2), ("", "a kind reply", "meh", 4)]
    assert data.skipped == 1


def test_chosen_rejected_layout_in_csv(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,chosen,rejected\n"Hi, you",good answer,bad answer\n,only chosen,only rejected\n')
    data = read_preferences(path)
    assert data.layout == "pairs"
    assert [(p.context, p.chosen, p.rejected) for p in data.pairs] == [
        ("Hi, you", "good answer", "bad answer"), ("", "only chosen", "only rejected")]


def test_missing_column_names_the_file_and_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"context_messages": "[]", "policy_response": "a", "human_eval": 0}])
    with pytest.raises(DataError, match=r"p\.jsonl.*missing column 'reference_response'.*found columns "
                                        r"'context_messages', 'policy_response', 'human_eval'"):
        read_preferences(path)


@pytest.mark.parametrize("verdict", [4, -1, "yes", 0.5, None])
def test_human_eval_outside_0_to_3_names_the_row(tmp_path, verdict):
    path = write_jsonl(tmp_path / "p.jsonl", [seed_row(), seed_row(verdict=verdict)])
    with pytest.raises(DataError, match=r"p\.jsonl, line 2: human_eval .* expected 0 .*1 .*2 or 3"):
        read_preferences(path)


def test_empty_response_names_the_row(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [seed_row(), seed_row(reference="   ")])
    with pytest.raises(DataError, match=r"line 2: key 'reference_response' is empty|line 2: column "
                                        r"'reference_response' is empty"):
        read_preferences(path)


def test_no_usable_rows_after_skipping_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [seed_row(verdict=2), seed_row(verdict=3)])
    with pytest.raises(DataError, match="no usable preference rows.*2 rows skipped"):
        read_preferences(path)


def test_unsupported_type_and_empty_file(tmp_path):
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match="expected .xlsx, .csv or .jsonl"):
        read_preferences(tmp_path / "p.txt")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no data rows"):
        read_preferences(tmp_path / "e.jsonl")


def test_split_is_seeded_and_disjoint():
    from softprompt.tasks.preferences import PreferencePair

    pairs = [PreferencePair("", f"c{i}", f"r{i}", i) for i in range(20)]
    train, held = split_pairs(pairs, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert {p.index for p in train}.isdisjoint({p.index for p in held})
    assert [p.index for p in held] == [p.index for p in split_pairs(pairs, 0.25, seed=3)[1]]
    assert [p.index for p in held] != [p.index for p in split_pairs(pairs, 0.25, seed=4)[1]]


def test_pairs_from_labels_match_lengths_and_choose_the_positive(tmp_path):
    from softprompt.tasks import Example

    rng = random.Random(0)
    examples = [Example(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))), label=rng.randint(0, 1))
                for _ in range(200)]
    positive = {e.text.lower() for e in examples if e.label == 1}
    pairs = pairs_from_labels(examples, seed=0, detok=False)
    assert len(pairs) == min(sum(e.label == 1 for e in examples), sum(e.label == 0 for e in examples))
    assert all(p.chosen.lower() in positive and p.rejected.lower() not in positive for p in pairs)
    gap = sum(abs(len(p.chosen.split()) - len(p.rejected.split())) for p in pairs) / len(pairs)
    assert gap < 1.0
    for suffix in (".jsonl", ".csv", ".xlsx"):
        back = read_preferences(write_preferences(pairs[:5], tmp_path / f"p{suffix}"))
        assert [(p.chosen, p.rejected) for p in back.pairs] == [(p.chosen, p.rejected) for p in pairs[:5]]


def test_make_preferences_command(tmp_path, capsys):
    root = tmp_path / "glue" / "SST-2"
    root.mkdir(parents=True)
    pos = ["a great and fun movie with good actors", "i loved it so very much", "really good story of love"]
    neg = ["a boring plot and bad actors all along", "i hated it very much", "an awful film of the year"]
    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t} \t1\n" for t in pos)
                                    + "".join(f"{t} \t0\n" for t in neg))
    out = tmp_path / "prefs.jsonl"
    assert main(["make-preferences", "--data-dir", str(tmp_path / "glue"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["chosen"].lower().rstrip() in pos for r in rows)
    assert "wrote 3 pairs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- training


@pytest.fixture
def bert_dir(tmp_path):
    return save_backbone(tiny_bert(), tmp_path / "bert")


def length_preferences(path, n: int, seed: int):
    """Synthetic preference: the longer response wins (chosen 6-10 words, rejected 1-3)."""
    rng = random.Random(seed)

    def words(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))
    rows = []
    for _ in range(n):
        long, short = words(rng.randint(6, 10)), words(rng.randint(1, 3))
        policy_wins = rng.random() < 0.5
        rows.append(seed_row(long if policy_wins else short, short if policy_wins else long,
                             0 if policy_wins else 1, json.dumps([{"role": "user", "content": words(3)}])))
    rows.append(seed_row(verdict=2))  # no preference: skipped
    return write_jsonl(path, rows)


def rm_config(tmp_path, bert_dir, **changes):
    raw = {"model": str(bert_dir), "output_dir": str(tmp_path / "runs"), "run_id": "rm",
           "adapter": {"type": "prefix_tuning", "num_virtual_tokens": 4},
           "method": {"name": "reward_pairwise"},
           "preferences": {"file": str(length_preferences(tmp_path / "prefs.jsonl", 240, 0)), "eval_ratio": 0.25},
           "train": {"batch": 16, "epochs": 4, "lr": 0.03, "head_lr": 0.03, "warmup_ratio": 0.0}}
    raw.update(changes)
    return from_dict(raw)


def test_tiny_encoder_learns_a_synthetic_preference(tmp_path, bert_dir):
    trainer = make_trainer(rm_config(tmp_path, bert_dir), progress=False)
    before = trainer.evaluate()[0]["eval_pairwise_accuracy"]
    start = [p.detach().clone() for p in trainer.clf.trainable_parameters()]
    frozen = {n: p.detach().clone() for n, p in trainer.clf.model.model.named_parameters()}
    metrics = trainer.fit(progress=False)
    assert metrics["eval_pairwise_accuracy"] > 0.9 > before + 0.2
    assert all(not torch.equal(a, b) for a, b in zip(start, trainer.clf.trainable_parameters()))
    assert all(torch.equal(frozen[n], p) for n, p in trainer.clf.model.model.named_parameters())
    run = trainer.run.path
    assert (run / "checkpoints" / "best" / "head.safetensors").exists()
    log = (run / "train_result.log").read_text().splitlines()
    assert any(" train step 1 epoch 0 | " in line and "loss/pairwise" in line for line in log)
    assert any(" eval  step " in line and "eval_pairwise_accuracy" in line for line in log)
    data = json.loads((run / "data.json").read_text())
    assert data["skipped"] == 1 and data["train_pairs"] + data["eval_pairs"] == 240

    # the run is a reward: longer completions score higher
    from softprompt.rewards import RewardContext, RewardSet

    reward = RewardSet.from_config([{"name": "reward_model", "run": str(run)}], RewardContext())
    total, parts = reward(["the movie", "the movie"], ["the plot was great and the actors really good", "bad"],
                          [None, None])
    assert total[0] > total[1] and set(parts) == {"reward_model"}
    # input: the pair (context, completion), the text prompt + completion, or the completion alone
    from softprompt.runs.loading import load_reward_model

    rm = load_reward_model(str(run))
    prompts, completions = ["the movie", "a film"], ["was good", "bad"]
    for mode, (contexts, responses) in {"pair": (prompts, completions),
                                        "text": (["", ""], ["the moviewas good", "a filmbad"]),
                                        "completion": (["", ""], completions)}.items():
        got = RewardSet.from_config([{"name": "reward_model", "run": str(run), "input": mode}],
                                    RewardContext())(prompts, completions, [None, None])[0]
        torch.testing.assert_close(got, torch.as_tensor(rm.score(contexts, responses)).float(), msg=mode)


def test_bad_preference_file_leaves_no_run_folder(tmp_path, bert_dir):
    path = write_jsonl(tmp_path / "bad.jsonl", [seed_row(), seed_row(verdict=7)])
    cfg = rm_config(tmp_path, bert_dir)
    cfg.preferences.file = str(path)
    with pytest.raises(DataError, match="line 2: human_eval 7"):
        make_trainer(cfg, progress=False)
    assert not (tmp_path / "runs").exists()
    cfg.preferences.file = None
    with pytest.raises(ConfigError, match="needs preferences.file"):
        make_trainer(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_reward_model_reward_refuses_a_run_that_is_not_a_reward_model(tmp_path):
    from softprompt.rewards import RewardContext, RewardSet

    with pytest.raises(ConfigError, match="give 'run'"):
        RewardSet.from_config([{"name": "reward_model"}], RewardContext())
    (tmp_path / "config.yaml").write_text("method: {name: grpo}\nrewards: [{name: length}]\n")
    with pytest.raises(ConfigError, match="is a 'grpo' run, not a reward model .* nor a classifier"):
        RewardSet.from_config([{"name": "reward_model", "run": str(tmp_path)}], RewardContext())


def test_a_classifier_run_is_a_pointwise_reward_model(tmp_path):
    from conftest import tiny_llama
    from test_trainer import config as classifier_config

    from softprompt.rewards import RewardContext, RewardSet

    backbone = tiny_llama()
    save_backbone(backbone, tmp_path / "model")
    raw = classifier_config(tmp_path, tmp_path / "model", method={"name": "mle"}, train={"epochs": 1})
    run = make_trainer(from_dict(raw), progress=False)
    run.fit(progress=False)
    both = RewardSet.from_config([{"name": "reward_model", "run": str(run.run.path)},
                                  {"name": "classifier", "run": str(run.run.path)}], RewardContext())
    _, parts = both(["the movie", "a film"], [" was great", " was awful"], [None, None])
    assert torch.allclose(parts["reward_model"], parts["classifier"])
    assert ((parts["reward_model"] > 0) & (parts["reward_model"] < 1)).all()
