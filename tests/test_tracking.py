"""Checkpoints on a schedule (train.save_steps / save_total_limit) and the experiment trackers
(train.report_to): W&B offline and MLflow on a local file store, both the real libraries."""

import json

import pytest
import torch
from conftest import save_backbone, tiny_llama
from test_trainer import config

from softprompt.errors import ConfigError
from softprompt.experiment import from_dict
from softprompt.training.assemble import make_trainer
from softprompt.training.checkpoint import latest_checkpoint


@pytest.fixture
def model_dir(tmp_path):
    return save_backbone(tiny_llama(), tmp_path / "model")


def mle(tmp_path, model_dir, run_id="r", **train):
    """24 training rows at batch 4: 6 optimizer steps an epoch, 2 epochs."""
    return from_dict(config(tmp_path, model_dir, run_id=run_id, method={"name": "mle"},
                            train={"epochs": 2, "lr": 0.05, **train}))


def step_state(path):
    return json.loads((path / "trainer_state.json").read_text())["counters"]["global_step"]


def test_save_total_limit_keeps_the_newest_n(tmp_path, model_dir):
    trainer = make_trainer(mle(tmp_path, model_dir, save_steps=2, save_total_limit=2, report_to="none"),
                           progress=False)
    seen = []
    original = trainer._save
    trainer._save = lambda which: (seen.append(which), original(which))
    trainer.fit(progress=False)
    assert [w for w in seen if w.startswith("step-")] == [f"step-{n}" for n in (2, 4, 6, 8, 10, 12)]
    folder = trainer.run.checkpoints
    assert sorted(p.name for p in folder.iterdir()) == ["best", "last", "step-10", "step-12"]
    assert step_state(folder / "step-10") == 10 and step_state(folder / "step-12") == 12
    assert not (trainer.run.path / "tb").exists()  # report_to: none


def test_resume_starts_from_a_step_checkpoint_newer_than_last(tmp_path, model_dir):
    full = make_trainer(mle(tmp_path, model_dir, run_id="full"), progress=False)
    expected = full.fit(progress=False)

    cut = make_trainer(mle(tmp_path, model_dir, run_id="cut", save_steps=3), progress=False)

    def die_at_10(logs):
        if cut.counters["global_step"] == 10:
            raise KeyboardInterrupt
    cut.on_step = die_at_10
    with pytest.raises(KeyboardInterrupt):
        cut.fit(progress=False)
    folder = cut.run.checkpoints
    assert step_state(folder / "last") == 6 and step_state(folder / "step-9") == 9
    assert latest_checkpoint(folder) == folder / "step-9"

    resumed = make_trainer(mle(tmp_path, model_dir, run_id="cut", save_steps=3), resume=cut.run.path,
                           progress=False)
    assert resumed.counters["global_step"] == 9 and resumed.counters["epoch"] == 1
    got = resumed.fit(progress=False)
    assert got["global_step"] == expected["global_step"] == 12
    assert got["eval_loss"] == pytest.approx(expected["eval_loss"], abs=1e-6)
    assert torch.allclose(resumed.clf.model.adapter.embeddings, full.clf.model.adapter.embeddings, atol=1e-6)
    logged = [json.loads(r)["step"] for r in (cut.run.path / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))  # the steps after step-9 that the crash logged are redone once


def test_report_to_is_checked(tmp_path, model_dir, monkeypatch):
    with pytest.raises(ConfigError, match=r"'tensorbored' is not a tracker \(did you mean 'tensorboard'\?\)"):
        mle(tmp_path, model_dir, report_to=["tensorbored"])
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        mle(tmp_path, model_dir, report_to=["none", "wandb"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"mlflow is not installed; pip install 'softprompt\[mlflow\]'"):
        make_trainer(mle(tmp_path, model_dir, report_to=["mlflow"]), progress=False)
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_wandb_offline_and_mlflow_get_the_runs_scalars_config_and_artifacts(tmp_path, model_dir, monkeypatch):
    wandb = pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a local file store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x: maintained, off by default
    logged = []  # what softprompt hands the real wandb.Run.log
    real_log = wandb.sdk.wandb_run.Run.log

    runs = set()

    def spy(self, data, step=None, **kw):
        logged.append((step, dict(data)))
        runs.add(self)
        return real_log(self, data, step=step, **kw)
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)

    trainer = make_trainer(mle(tmp_path, model_dir, run_id="tracked", report_to=["tensorboard", "wandb", "mlflow"],
                               project="sp-test"), progress=False)
    trainer.fit(progress=False)
    run = trainer.run.path
    steps = [json.loads(r) for r in (run / "train_log.jsonl").read_text().splitlines()]
    evals = [json.loads(r) for r in (run / "epoch_metrics.jsonl").read_text().splitlines()]

    def expected(key):  # (step, value) of train/<key> in train_log.jsonl
        return [(r["step"], r[key]) for r in steps if isinstance(r.get(key), (int, float))]

    # W&B: every train/ scalar at its step, the eval rows, the config, the run's name
    for key in ("loss", "lr", "grad_norm", "loss/mle"):
        got = [(s, d[f"train/{key}"]) for s, d in logged if f"train/{key}" in d]
        assert got == expected(key), key
    assert [(s, d["eval/eval_accuracy"]) for s, d in logged if "eval/eval_accuracy" in d] == \
        [(r["step"], r["eval_accuracy"]) for r in evals]
    (wrun,) = runs
    assert (wrun.name, wrun.project) == ("tracked", "sp-test")
    assert wrun.config["train.lr"] == 0.05 and wrun.config["method.name"] == "mle"
    (offline,) = (run / "wandb").glob("offline-run-*")  # the run's files, kept offline for `wandb sync`
    assert offline.name.endswith(json.loads((run / "trackers.json").read_text())["wandb"]["id"])
    assert "metrics.json" in {p.name for p in (offline / "files").iterdir()}

    # MLflow: the same histories from its file store, the config as params, the run id as its name
    client = mlflow.MlflowClient()
    (exp,) = [e for e in client.search_experiments() if e.name == "sp-test"]
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.run_name == "tracked" and mrun.info.status == "FINISHED"
    assert mrun.data.params["train.lr"] == "0.05" and mrun.data.params["method.name"] == "mle"
    for key in ("loss", "lr", "loss/mle"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, f"train.{key}".replace("/", ".")))
        assert history == pytest.approx(expected(key)), key
    artifacts = {a.path for a in client.list_artifacts(mrun.info.run_id)}
    assert "metrics.json" in artifacts
    assert list((run / "tb").iterdir())  # TensorBoard as before
