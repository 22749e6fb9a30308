"""Two processes (gloo on this CPU) train one prompt: both ranks end bit-identical, and equal to a
one-process run on the same global batches."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import save_backbone, tiny_llama
from test_trainer import config

from softprompt.storage import load_tensors


def _config(tmp_path, model_dir, run_id: str) -> dict:
    return config(tmp_path, model_dir, run_id=run_id, method={"name": "mle"}, train={"epochs": 2})


def _train(tmp_path, run_id: str, processes: int, overrides: list[str] = ()):
    cfg = tmp_path / f"{run_id}.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, tmp_path / "model", run_id)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = subprocess.run([sys.executable, "-m", "softprompt", "train", "--no-progress", "--config-name", str(cfg),
                          "--num-processes", str(processes), *overrides], cwd=tmp_path, env=env, capture_output=True, text=True,
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


SHARDED = ["fsdp", pytest.param("deepspeed", marks=pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed (it is in .[dev])"))]


@pytest.mark.parametrize("strategy", SHARDED)
def test_sharded_backbone_trains_the_same_prompt(tmp_path, strategy):
    """train.strategy=fsdp (FSDP2) or deepspeed (ZeRO stage 3): each rank holds part of the frozen
    backbone, and the prompt trained by 2 processes equals the 1-process one as with the
    replicated backbone."""
    save_backbone(tiny_llama(), tmp_path / "model")
    two = _train(tmp_path, strategy, 2, [f"train.strategy={strategy}"])
    one = _train(tmp_path, "one", 1)
    info = json.loads((two / "distributed.json").read_text())
    assert info["strategy"] == strategy and info["ranks_identical"]
    full, held = info["backbone_parameters"], info["backbone_parameters_per_rank"]
    whole = 2 * 64 * 64  # input embeddings and LM head: kept whole on every rank
    assert held == [whole + (full - whole) // 2] * 2  # the blocks and the final norm: half each
    a = load_tensors(two / "checkpoints" / "last" / "adapter.safetensors")
    b = load_tensors(one / "checkpoints" / "last" / "adapter.safetensors")
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)
    m2, m1 = (json.loads((r / "metrics.json").read_text()) for r in (two, one))
    assert m2["eval_accuracy"] == pytest.approx(m1["eval_accuracy"]) and m2["global_step"] == m1["global_step"]


@pytest.mark.parametrize("strategy", SHARDED)
def test_sharded_rl_runs_rollouts_in_lockstep(tmp_path, strategy):
    """GRPO on a sharded backbone: generation goes on until both ranks' rows are done (a rank
    that stopped alone would leave the other waiting in a gather), evaluation runs on both."""
    from test_rl import PROMPTS

    save_backbone(tiny_llama(), tmp_path / "model")
    raw = {"model": str(tmp_path / "model"), "output_dir": str(tmp_path / "runs"), "run_id": "rl",
           "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0},
           "method": {"name": "grpo", "group_size": 2, "beta": 0.1},
           "prompts": {"source": "list", "items": PROMPTS, "num_eval": 3},
           "generation": {"max_new_tokens": 6, "eval_samples": 2},
           "rewards": [{"name": "regex_match", "pattern": "great"}, {"name": "perplexity", "weight": 0.5}],
           "train": {"batch": 4, "epochs": 2, "max_steps": 3, "lr": 0.1, "strategy": strategy}}
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = subprocess.run([sys.executable, "-m", "softprompt", "train", "--no-progress", "--config-name", str(cfg),
                          "--num-processes", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "model" / "list" / "grpo" / "rl"
    info = json.loads((run / "distributed.json").read_text())
    assert info["strategy"] == strategy and info["ranks_identical"]
    assert max(info["backbone_parameters_per_rank"]) < info["backbone_parameters"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and "base_eval_reward" in metrics and "before_eval_reward" in metrics


@pytest.mark.parametrize("strategy", SHARDED)
def test_sharding_refuses_a_backbone_that_trains(tmp_path, strategy):
    from softprompt.errors import ConfigError
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    save_backbone(tiny_llama(), tmp_path / "model")
    raw = config(tmp_path, tmp_path / "model", run_id="lora", method={"name": "mle"},
                 adapter={"type": "lora", "r": 2}, train={"strategy": strategy})
    raw["adapter"] = {"type": "lora", "r": 2}
    with pytest.raises(ConfigError, match=f"strategy={strategy} shards a frozen backbone.*lora"):
        make_trainer(from_dict(raw), progress=False)
    assert not (tmp_path / "runs").exists()  # refused before the run folder


def test_accelerate_launch_configs_pick_the_strategy(monkeypatch):
    from softprompt.experiment import TrainSection
    from softprompt.training.trainer import strategy_of

    assert strategy_of(TrainSection()) == "ddp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --config_file <an FSDP config>
    assert strategy_of(TrainSection()) == "fsdp"
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # <a DeepSpeed config>
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert strategy_of(TrainSection()) == "deepspeed"
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")  # only the adapter's optimizer state to partition
    assert strategy_of(TrainSection()) == "ddp"


def test_deepspeed_strategy_without_deepspeed_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util as iu

    from softprompt.errors import ConfigError
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    save_backbone(tiny_llama(), tmp_path / "model")
    raw = config(tmp_path, tmp_path / "model", run_id="ds", method={"name": "mle"}, train={"strategy": "deepspeed"})
    with pytest.raises(ConfigError, match=r"pip install 'softprompt\[deepspeed\]'"):
        make_trainer(from_dict(raw), progress=False)
    assert not (tmp_path / "runs").exists()
