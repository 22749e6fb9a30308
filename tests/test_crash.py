"""Crash safety: a training process killed with SIGKILL at random steps, resumed each time, ends
exactly like an uninterrupted run, and no checkpoint on disk is ever unreadable."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import save_backbone, tiny_llama
from test_trainer import config

from softprompt.storage import load_tensors
from softprompt.training.checkpoint import find_checkpoint, load_checkpoint


def _config(tmp_path, model_dir, run_id: str) -> dict:
    return config(tmp_path, model_dir, run_id=run_id, train={"eval_every": 2})  # `last` every 2 steps


def _train(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "softprompt", "train", "--no-progress", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _steps_logged(run) -> int:
    path = run / "train_log.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _all_checkpoints_readable(run) -> None:
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    for which in ("last", "best"):
        found = find_checkpoint(run / "checkpoints" / which)
        if found is None:
            continue
        trainer = make_trainer(from_dict(yaml.safe_load((run / "config.yaml").read_text())), progress=False)
        load_checkpoint(found, trainer.clf, trainer.optimizer, trainer.scheduler)  # raises if unreadable
        load_tensors(found / "adapter.safetensors")
        trainer.run.close()


def test_sigkill_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path):
    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    for run_id in ("full", "killed"):
        (tmp_path / f"{run_id}.yaml").write_text(yaml.safe_dump(_config(tmp_path, model_dir, run_id)))
    full = _train(["--config-name", str(tmp_path / "full.yaml")], tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    run = tmp_path / "runs" / "model" / "sst2" / "ptcprl" / "killed"
    rng = random.Random(0)
    kills, args = 0, ["--config-name", str(tmp_path / "killed.yaml")]
    while True:
        proc = _train(args, tmp_path)
        target = _steps_logged(run) + rng.randint(1, 5)
        while proc.poll() is None and _steps_logged(run) < target:
            time.sleep(0.02)
        if proc.poll() is not None:  # it finished before the chosen step
            assert proc.returncode == 0, proc.stderr.read()
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        _all_checkpoints_readable(run)
        args = ["--resume", str(run)]
    assert kills >= 3
    expected = json.loads((tmp_path / "runs" / "model" / "sst2" / "ptcprl" / "full" / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_loss", "global_step", "epochs"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    a = load_tensors(tmp_path / "runs" / "model" / "sst2" / "ptcprl" / "full" / "checkpoints" / "last" /
                     "adapter.safetensors")
    b = load_tensors(run / "checkpoints" / "last" / "adapter.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, expected["global_step"] + 1))  # each step logged once despite the kills
