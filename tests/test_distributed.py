"""Two processes (gloo on this CPU) train one prompt: both ranks end bit-identical, and equal to a
one-process run on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import save_backbone, tiny_llama
from test_trainer import config

from softprompt.io import load_tensors


def _config(tmp_path, model_dir, run_id: str) -> dict:
    return config(tmp_path, model_dir, run_id=run_id, method={"name": "mle"}, train={"epochs": 2})


def _train(tmp_path, run_id: str, processes: int):
    cfg = tmp_path / f"{run_id}.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, tmp_path / "model", run_id)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = subprocess.run([sys.executable, "-m", "softprompt", "train", "--no-progress", "--config-name", str(cfg),
                          "--num-processes", str(processes)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp_path / "runs" / "model" / "sst2" / "mle" / run_id


def test_two_processes_train_the_same_prompt_as_one(tmp_path):
    save_backbone(tiny_llama(), tmp_path / "model")
    two = _train(tmp_path, "two", 2)
    one = _train(tmp_path, "one", 1)
    info = json.loads((two / "distributed.json").read_text())
    assert info["world_size"] == 2 and info["ranks_identical"]  # both ranks hold the same bytes
    assert len(set(info["trainable_sha256_per_rank"])) == 1
    assert not (one / "distributed.json").exists()
    a = load_tensors(two / "checkpoints" / "last" / "adapter.safetensors")
    b = load_tensors(one / "checkpoints" / "last" / "adapter.safetensors")
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)  # float sums in another order, {k: float((a[k] - b[k]).abs().max()) for k in a}
    m2, m1 = (json.loads((r / "metrics.json").read_text()) for r in (two, one))
    for key in ("eval_accuracy", "eval_loss", "global_step"):
        assert m2[key] == pytest.approx(m1[key], abs=1e-4), key
    logs = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert len(logs) == m1["global_step"] and all("allreduce_seconds" in r for r in logs)
    ones = [json.loads(line) for line in (one / "train_log.jsonl").read_text().splitlines()]
    for r2, r1 in zip(logs, ones):  # the logged loss is the mean over ranks: the global batch's loss
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-4)
