"""Multi-stage experiment configs (stages, init_from, actions, presets) on a tiny saved model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import save_backbone, tiny_llama
from test_rl import PROMPTS
from test_trainer import glue_dir

from softprompt.commands.cli import main
from softprompt.commands.stages import load_pipeline
from softprompt.errors import ConfigError
from softprompt.experiment import resolve
from softprompt.storage import load_tensors


def _pipeline(tmp, model, data_dir) -> dict:
    task = {"name": "sst2", "data_dir": str(data_dir), "template": "{text} :",
            "label_words": [["bad", "awful"], ["good", "great"]]}
    adapter = {"type": "prompt_tuning", "num_virtual_tokens": 3, "init": "random", "init_seed": 0}
    return {
        "output_dir": str(tmp / "exp"),
        "stages": [
            {"name": "sft", "config": {"model": str(model), "classifier": "verbalizer", "task": task,
                                       "adapter": adapter, "output_dir": str(tmp / "exp"),
                                       "train": {"batch": 4, "epochs": 2, "lr": 0.05}}},
            {"name": "rl", "init_from": "sft",
             "config": {"model": str(model), "task": task, "adapter": adapter, "output_dir": str(tmp / "exp"),
                        "method": {"name": "grpo", "group_size": 2},
                        "prompts": {"source": "list", "items": PROMPTS, "num_eval": 2},
                        "generation": {"max_new_tokens": 3, "eval_samples": 1},
                        "rewards": [{"name": "regex_match", "pattern": "great"}],
                        "train": {"batch": 2, "max_steps": 2, "lr": 0.05}}},
            {"name": "glue", "action": "glue_eval", "runs": ["sft", "rl"], "tasks": ["sst2"], "base": True},
            {"name": "chat", "action": "chat", "run": "rl", "max_new_tokens": 3,
             "conversations": [{"question": "the movie was"},
                               {"history": [{"role": "user", "content": "i loved it"}], "question": "and the plot"}]},
        ],
        "presets": {"quick": ["rl.train.max_steps=1", "seed=3"]},
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    backbone = tiny_llama()
    backbone.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    model = save_backbone(backbone, tmp / "model")
    (tmp / "pipe.yaml").write_text(yaml.safe_dump(_pipeline(tmp, model, glue_dir(tmp))))
    assert main(["train", "--config-name", str(tmp / "pipe.yaml"), "--no-progress", "run_id=p"]) == 0
    return tmp


def test_pipeline_runs_every_stage_and_writes_its_folder(done):
    folder = done / "exp" / "pipelines" / "pipe" / "p"
    stages = json.loads((folder / "pipeline.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["sft", "rl", "glue", "chat"]
    sft, rl = stages[0]["run"], stages[1]["run"]
    assert sft.endswith("sst2/mle/p-sft") and rl.endswith("list/grpo/p-rl")
    assert "eval_accuracy" in stages[0]["metrics"]
    glue = json.loads((folder / "glue.json").read_text())
    assert set(glue) == {"base", "sft", "rl"} and "eval_accuracy" in glue["base"]["sst2"]
    summary = (folder / "summary.md").read_text()
    assert "| task | metric | base | sft | rl | sft - base | rl - base |" in summary
    rows = [json.loads(line) for line in (folder / "chat.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"tuned", "base", "question", "history"} <= set(rows[1])
    assert rows[1]["history"] == [{"role": "user", "content": "i loved it"}]


def test_init_from_starts_the_next_stage_from_the_previous_prompt(done, tmp_path):
    from softprompt.training.assemble import make_trainer

    sft = done / "exp" / "model" / "sst2" / "mle" / "p-sft"
    saved = load_tensors(sft / "checkpoints" / "best" / "adapter.safetensors")["embeddings"]
    pipe = load_pipeline(str(done / "pipe.yaml"), ["run_id=p", f"rl.output_dir={tmp_path}"])
    config = pipe.configs["rl"]
    assert config.init_from == str(sft)
    trainer = make_trainer(config, progress=False)
    assert torch.equal(trainer.work.module.model.adapter.embeddings.detach(), saved)
    # a fresh init differs: the copy is what made them equal
    fresh = make_trainer(resolve_config(config, tmp_path), progress=False)
    assert not torch.equal(fresh.work.module.model.adapter.embeddings.detach(), saved)


def resolve_config(config, tmp_path):
    from softprompt.config import to_dict
    from softprompt.experiment import from_dict

    raw = to_dict(config)
    raw.update(init_from=None, run_id="fresh", output_dir=str(tmp_path / "fresh"))
    return from_dict(raw)


def test_a_second_start_keeps_finished_stages(done):
    folder = done / "exp" / "pipelines" / "pipe" / "p"
    sft = done / "exp" / "model" / "sst2" / "mle" / "p-sft" / "metrics.json"
    before = (sft.stat().st_mtime_ns, (folder / "glue.json").stat().st_mtime_ns)
    assert main(["train", "--config-name", str(done / "pipe.yaml"), "--no-progress", "run_id=p"]) == 0
    assert (sft.stat().st_mtime_ns, (folder / "glue.json").stat().st_mtime_ns) == before


def test_overrides_address_stages_and_presets_apply(done):
    pipe = load_pipeline(str(done / "pipe.yaml"), ["sft.train.lr=0.5", "train.batch=2", "glue.base=false"])
    assert pipe.configs["sft"].train.lr == 0.5 and pipe.configs["rl"].train.lr == 0.05
    assert pipe.configs["sft"].train.batch == pipe.configs["rl"].train.batch == 2  # plain keys: every stage
    assert pipe.stages[2].options["base"] is False
    quick = load_pipeline(str(done / "pipe.yaml"), preset="quick")
    assert quick.configs["rl"].train.max_steps == 1 and quick.configs["sft"].seed == 3
    with pytest.raises(ConfigError, match="no preset 'paper'.*quick"):
        load_pipeline(str(done / "pipe.yaml"), preset="paper")


@pytest.mark.parametrize("change, message", [
    (lambda s: s[1].update(init_from="glue"), "init_from='glue': expected an earlier stage"),
    (lambda s: s[2].update(tsks=["sst2"]), "has no key 'tsks'.*did you mean 'tasks'"),
    (lambda s: s[2].pop("tasks"), "needs tasks"),
    (lambda s: s[2].update(action="glue_evl"), "glue_evl"),
    (lambda s: s[0].update(name="train"), "not a config key"),
    (lambda s: s[1]["config"].update(init_from="${nope}"), r"\$\{nope\}"),
    (lambda s: s[0]["config"]["train"].update(lrr=1), "lrr"),
])
def test_bad_pipelines_fail_before_any_run(tmp_path, change, message):
    raw = _pipeline(tmp_path, tmp_path / "model", tmp_path / "glue")
    change(raw["stages"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_pipeline(str(tmp_path / "bad.yaml"))
    assert not (tmp_path / "exp").exists()


def test_single_run_presets(tmp_path):
    raw = {"defaults": "sentiment_steering", "presets": {"paper": ["model=gpt2", "train.batch=128"],
                                                        "small": {"train.max_steps": 3, "prompts.num_eval": 4}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert resolve(tmp_path / "c.yaml").model.name == "smollm2-135m-instruct"
    paper = resolve(tmp_path / "c.yaml", preset="paper")
    assert paper.model.name == "gpt2" and paper.train.batch == 128
    small = resolve(tmp_path / "c.yaml", ["train.max_steps=5"], preset="small")
    assert small.train.max_steps == 5 and small.prompts.num_eval == 4  # the command line wins
    with pytest.raises(ConfigError, match="no preset 'big'"):
        resolve(tmp_path / "c.yaml", preset="big")


def test_the_seed_spellings_of_ppo_and_ptcprl_options():
    c = resolve("softprompt_ppo_sentiment", ["method.n_soft_tokens=7", "method.initialize_from_vocab=false",
                                             "method.num_layers_unfrozen=1", "method.tune_v_head=false"])
    adapter = c.adapter_config()
    assert adapter.num_virtual_tokens == 7 and adapter.init == "random"
    assert c.method_config().num_layers_unfrozen == 1 and c.method_config().tune_v_head is False
    seed = resolve("ptcprl_sst2", "train.batch=4 train.epochs=3 method_cfg.num_virtual_tokens=10 "
                                  "method_cfg.rl_subset_size=8 method_cfg.k_negatives=1".split())
    assert (seed.train.batch, seed.train.epochs, seed.adapter_config().num_virtual_tokens) == (4, 3, 10)
    assert (seed.method_config().rl_subset_size, seed.method_config().k_negatives) == (8, 1)


@pytest.mark.parametrize("name", ["ptcprl_sst2", "polychromic_baseline", "polychromic", "hard2soft_ppo", "rlpt_cola",
                                  "softprompt_ppo_sentiment", "softprompt_ppo_sentiment_conditional"])
def test_every_source_experiment_resolves_with_its_paper_preset(name):
    pipe = load_pipeline(name, preset="paper")
    configs = pipe.configs.values() if pipe is not None else [resolve(name, preset="paper")]
    assert all(c.model not in ("smollm2-135m-instruct", "minilm-l6") for c in configs)


def test_a_multi_stage_config_is_not_a_single_run():
    import softprompt

    with pytest.raises(ConfigError, match="multi-stage config.*softprompt.run_pipeline"):
        softprompt.train("rlpt_cola")
    assert load_pipeline("sentiment_steering") is None  # a single-run config: softprompt train runs it
