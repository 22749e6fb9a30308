"""The trainer end to end on a tiny model: run folder, phases, exact resume, clean failures."""

import json

import pytest
import torch
from conftest import save_backbone, tiny_llama
from helpers import fit_until_killed, poisoned_grad

from softprompt.errors import ConfigError, DataError
from softprompt.experiment import from_dict
from softprompt.training.assemble import make_trainer

POS = ["the movie was great", "i loved it", "really fun and good", "a great story", "so good", "great actors"]
NEG = ["the movie was awful", "i hated it", "a boring plot", "bad actors", "not very good", "an awful story"]


def glue_dir(tmp_path, bad_row: str | None = None):
    root = tmp_path / "glue" / "SST-2"
    root.mkdir(parents=True, exist_ok=True)
    rows = [f"{t} \t1" for t in POS] + [f"{t} \t0" for t in NEG]
    if bad_row:
        rows.insert(3, bad_row)
    (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 2) + "\n")
    (root / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return tmp_path / "glue"


@pytest.fixture
def model_dir(tmp_path):
    return save_backbone(tiny_llama(), tmp_path / "model")


def config(tmp_path, model_dir, **sections):
    raw = {
        "model": str(model_dir), "classifier": "verbalizer", "output_dir": str(tmp_path / "runs"), "run_id": "r",
        "task": {"name": "sst2", "data_dir": str(glue_dir(tmp_path)), "template": "{text} :",
                 "label_words": [["bad", "awful"], ["good", "great"]]},
        "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
        "method": {"name": "ptcprl", "phase1_epochs": 1, "k_negatives": 1, "rl_subset_size": 4},
        "train": {"batch": 4, "epochs": 3, "lr": 0.05},
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key != "method"  # a method section replaces the other one
        raw[key] = {**raw.get(key, {}), **value} if merge else value
    return raw


def test_train_writes_the_run_folder(tmp_path, model_dir):
    trainer = make_trainer(from_dict(config(tmp_path, model_dir)), progress=False)
    metrics = trainer.fit(progress=False)
    run = trainer.run.path
    assert run == tmp_path / "runs" / "model" / "sst2" / "ptcprl" / "r"
    rows = [json.loads(x) for x in (run / "epoch_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"eval_loss", "eval_accuracy", "eval_runtime"} <= set(rows[0])
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("train_time_sec", "epochs", "eval_loss", "eval_accuracy", "eval_samples_per_second",
                "eval_steps_per_second"):
        assert key in saved
    assert saved == pytest.approx(metrics)
    for which in ("best", "last"):
        names = {p.name for p in (run / "checkpoints" / which).iterdir()}
        assert {"adapter.safetensors", "softprompt_adapter.json", "optimizer.safetensors",
                "trainer_state.json"} <= names
    assert (run / "config.yaml").exists() and list((run / "tb").iterdir())
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and {"index", "text", "gold", "predicted", "scores"} <= set(preds[0])


def test_phase_switch_activates_the_other_terms(tmp_path, model_dir):
    trainer = make_trainer(from_dict(config(tmp_path, model_dir)), progress=False)
    seen = []
    for name, objective in trainer.objectives.items():
        def spy(inputs, _obj=objective, _name=name):
            seen.append((inputs.epoch, _name))
            return type(_obj).__call__(_obj, inputs)
        trainer.objectives[name] = spy
    trainer.fit(progress=False)
    assert {n for e, n in seen if e == 0} == {"mle"}
    assert {n for e, n in seen if e == 1} == {"mle", "contrastive", "label_reinforce"}


def test_resume_ends_like_an_uninterrupted_run(tmp_path, model_dir):
    full = make_trainer(from_dict(config(tmp_path, model_dir, run_id="full")), progress=False)
    expected = full.fit(progress=False)

    interrupted = make_trainer(from_dict(config(tmp_path, model_dir, run_id="cut")), progress=False)
    fit_until_killed(interrupted, epoch=2)
    resumed = make_trainer(from_dict(config(tmp_path, model_dir, run_id="cut")), resume=interrupted.run.path,
                           progress=False)
    assert resumed.counters["epoch"] == 2
    got = resumed.fit(progress=False)
    for key in ("eval_accuracy", "eval_loss", "epochs", "global_step"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    a = full.clf.model.adapter.embeddings
    b = resumed.clf.model.adapter.embeddings
    assert torch.allclose(a, b, atol=1e-6)
    rows = (interrupted.run.path / "epoch_metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_unknown_key_and_bad_data_fail_before_any_folder(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="did you mean 'train.batch'"):
        from_dict(config(tmp_path, model_dir), ["train.bach=4"])
    cfg = from_dict(config(tmp_path, model_dir), ["method_cfg.k_negatives=2", "method_cfg.num_virtual_tokens=5"])
    assert cfg.method_config().k_negatives == 2 and cfg.adapter_config().num_virtual_tokens == 5
    raw = config(tmp_path / "bad", model_dir)
    raw["task"]["data_dir"] = str(glue_dir(tmp_path / "bad" / "x", bad_row="a fine film \t7"))
    with pytest.raises(DataError, match=r"train.tsv.*line"):
        make_trainer(from_dict(raw), progress=False)
    assert not (tmp_path / "bad" / "runs").exists()


def test_eval_command_on_run_and_base_model(tmp_path, model_dir, capsys):
    from softprompt.commands.cli import main
    from softprompt.commands.evaluate import evaluate_tasks

    trainer = make_trainer(from_dict(config(tmp_path, model_dir, method={"name": "mle"},
                                            train={"epochs": 1})), progress=False)
    summary = trainer.fit(progress=False)
    results = evaluate_tasks(["sst2"], adapter=str(trainer.run.path), save_predictions=str(tmp_path / "preds"))
    assert results["sst2"]["eval_accuracy"] == pytest.approx(summary["eval_accuracy"])
    assert results["sst2"]["eval_loss"] == pytest.approx(summary["eval_loss"], rel=1e-5)
    rows = (tmp_path / "preds" / "sst2.jsonl").read_text().splitlines()
    assert len(rows) == 12 and {"index", "text", "gold", "predicted", "scores"} <= set(json.loads(rows[0]))
    data_dir = str(tmp_path / "glue")
    assert main(["eval", "--model", str(model_dir), "--task", "sst2", "--data-dir", data_dir]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", "--model", str(model_dir), "--task", "sst3", "--data-dir", data_dir]) == 2
    assert "did you mean 'sst2'" in capsys.readouterr().err


def test_early_stopping_on_a_plateau(tmp_path, model_dir):
    # lr 0: the metric cannot improve after the first evaluation
    cfg = from_dict(config(tmp_path, model_dir, method={"name": "mle"},
                           train={"epochs": 5, "lr": 0.0, "early_stopping_patience": 2}))
    trainer = make_trainer(cfg, progress=False)
    summary = trainer.fit(progress=False)
    assert summary["stopped_early"] is True
    assert summary["epochs"] == 3  # best at epoch 1, then two evaluations without improvement
    rows = (trainer.run.path / "epoch_metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


def test_steps_after_the_last_periodic_evaluation_are_evaluated(tmp_path, model_dir):
    # 24 training rows, batch 4: 6 steps per epoch, 12 in all; eval_every 5 evaluates at 5 and 10, then at 12
    cfg = from_dict(config(tmp_path, model_dir, method={"name": "mle"}, train={"epochs": 2, "eval_every": 5}))
    trainer = make_trainer(cfg, progress=False)
    evaluated = []
    original = trainer.evaluate
    trainer.evaluate = lambda examples=None: evaluated.append(trainer.counters["global_step"]) or original(examples)
    summary = trainer.fit(progress=False)
    rows = [json.loads(r) for r in (trainer.run.path / "epoch_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 12]
    best = max(rows, key=lambda r: r["eval_accuracy"])
    assert summary["eval_accuracy"] == best["eval_accuracy"]
    # final weights that are the best are not evaluated again; else the best checkpoint is loaded and evaluated
    assert evaluated == [5, 10, 12] + ([] if best["step"] == 12 else [12])


def test_old_run_configs_with_flat_method_options_still_load(tmp_path, model_dir):
    old = {"name": "mle", "phase1_epochs": 1, "alpha": 1.0, "beta": 0.1, "gamma": 0.1, "k_negatives": 4,
           "temperature": 0.1, "contrastive_dropout": 0.1, "mutations": ["noise"], "noise_std": 1.0,
           "drop_fraction": 0.5, "rl_subset_size": 8, "label_smoothing": 0.0, "num_virtual_tokens": None}
    cfg = from_dict(config(tmp_path, model_dir, method=old))
    assert cfg.method_name == "mle" and not hasattr(cfg.method, "k_negatives")
    with pytest.raises(ConfigError, match="k_negatives"):  # a new config still gets the error
        from_dict(config(tmp_path, model_dir, method={"name": "mle", "k_negatives": 2}))


def _poison(trainer, bad_calls: set[int], what: str = "loss"):
    """Make the MLE term's loss (or its gradient) NaN on the given calls (0-based)."""
    objective = trainer.objectives["mle"]
    original, calls = objective.__call__, [0]

    def poisoned(inputs):
        out = original(inputs)
        if calls[0] in bad_calls:
            out.loss = out.loss * float("nan") if what == "loss" else out.loss + poisoned_grad(out.loss, float("nan"))
        calls[0] += 1
        return out

    trainer.objectives["mle"] = poisoned
    return calls


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path, model_dir, what):
    raw = config(tmp_path, model_dir, method={"name": "mle"}, train={"epochs": 1})
    trainer = make_trainer(from_dict(raw), progress=False)
    _poison(trainer, {1, 2}, what)
    params = trainer.clf.trainable_parameters()
    metrics = trainer.fit(progress=False)
    assert metrics["skipped_steps"] == 2 and metrics["global_step"] == 4  # 6 batches, 2 skipped
    assert all(torch.isfinite(p).all() for p in params)
    log = (trainer.run.path / "train_result.log").read_text()
    assert log.count(" skip  step ") == 2


def test_too_many_bad_steps_in_a_row_stop_the_run_and_keep_its_checkpoints(tmp_path, model_dir):
    from softprompt.errors import TrainingDiverged
    from softprompt.training.checkpoint import find_checkpoint

    raw = config(tmp_path, model_dir, method={"name": "mle"}, train={"epochs": 2, "max_bad_steps": 3})
    trainer = make_trainer(from_dict(raw), progress=False)
    _poison(trainer, set(range(6, 100)))  # the whole second epoch is NaN
    with pytest.raises(TrainingDiverged, match="3 steps in a row had a non-finite loss .* after 6 good steps"):
        trainer.fit(progress=False)
    last = trainer.run.checkpoints / "last"
    assert find_checkpoint(last) is not None  # the first epoch's checkpoint is still there and loadable
    resumed = make_trainer(from_dict(raw), resume=trainer.run.path, progress=False)
    assert resumed.counters["global_step"] == 6
    assert all(torch.isfinite(p).all() for p in resumed.clf.trainable_parameters())


def test_ctrl_c_saves_last_at_a_step_boundary_and_resume_finishes_the_same(tmp_path, model_dir):
    import os
    import signal

    from softprompt.errors import TrainingInterrupted

    def cfg(run_id):
        return from_dict(config(tmp_path, model_dir, method={"name": "mle"}, run_id=run_id, train={"epochs": 2}))

    expected = make_trainer(cfg("full"), progress=False).fit(progress=False)
    trainer = make_trainer(cfg("cut"), progress=False)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    trainer.on_step = lambda logs: os.kill(os.getpid(), signal.SIGINT) if trainer.counters["global_step"] == 4 else 0
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4: checkpoints/last saved; resume with"):
        trainer.fit(progress=False)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    resumed = make_trainer(cfg("cut"), resume=trainer.run.path, progress=False)
    assert resumed.counters["global_step"] == 4 and resumed.counters["micro_step"] == 4
    got = resumed.fit(progress=False)
    for key in ("eval_accuracy", "eval_loss", "global_step"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert " stop  step 4 " in (trainer.run.path / "train_result.log").read_text()


def test_a_checkpoint_after_an_epochs_last_batch_resumes_in_the_next_epoch(tmp_path, model_dir):
    """The periodic checkpoint written after an epoch's last batch must already count that epoch
    as done: a crash right after it must not replay the epoch."""
    def cfg(run_id):
        return from_dict(config(tmp_path, model_dir, run_id=run_id, method={"name": "mle"},
                                train={"epochs": 2, "eval_every": 2}))  # 6 batches per epoch

    expected = make_trainer(cfg("full"), progress=False).fit(progress=False)
    cut = make_trainer(cfg("cut"), progress=False)
    original = cut._save

    def save_then_die(which):
        original(which)
        if which == "last" and cut.counters["global_step"] == 6:  # the first save after batch 6 of 6
            raise KeyboardInterrupt
    cut._save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        cut.fit(progress=False)
    resumed = make_trainer(cfg("cut"), resume=cut.run.path, progress=False)
    assert (resumed.counters["epoch"], resumed.counters["micro_step"]) == (1, 0)
    got = resumed.fit(progress=False)
    for key in ("eval_accuracy", "eval_loss", "global_step", "epochs"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
