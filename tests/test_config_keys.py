"""Keys mean one thing and nothing is overridden silently: the seeds' spellings of adapter keys
move to the key they spell (conflicts are errors naming both), keys a method never reads are
refused, polychromic's multiplicative score refuses rewards that can be negative, run ids are
names, and an RL run says which prompts it evaluated and whether they were held out."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import tiny_llama
from test_rl import rl_config

from softprompt.config import dump_yaml, load_yaml, to_dict
from softprompt.errors import ConfigError
from softprompt.experiment import from_dict, resolve
from softprompt.training.assemble import build_rl


def _write(path, text):
    path.write_text(text)
    return path


# -- the seeds' spellings -----------------------------------------------------------------------

def test_seed_spellings_move_to_the_adapter_and_the_saved_config_says_what_is_trained(tmp_path):
    cfg = resolve("softprompt_ppo_sentiment", ["method.n_soft_tokens=10"])
    assert cfg.adapter.num_virtual_tokens == 10 and cfg.adapter_config().num_virtual_tokens == 10
    assert not hasattr(cfg.method, "n_soft_tokens") and not hasattr(cfg.method, "initialize_from_vocab")
    dump_yaml(to_dict(cfg), tmp_path / "config.yaml")  # what a run folder saves
    saved = load_yaml(tmp_path / "config.yaml")
    assert saved["adapter"]["num_virtual_tokens"] == 10 and "n_soft_tokens" not in saved["method"]
    assert from_dict(saved).adapter_config().num_virtual_tokens == 10
    assert resolve("softprompt_ppo_sentiment", ["method.initialize_from_vocab=true"]).adapter.init == "vocab"
    assert resolve("softprompt_ppo_sentiment", ["method_cfg.initialize_from_vocab=false"]).adapter.init == "random"
    assert resolve("ptcprl_sst2", ["method_cfg.num_virtual_tokens=7"]).adapter.num_virtual_tokens == 7


def test_adapter_type_is_one_key_away_on_every_glue_config():
    """``adapter.type=X`` swaps the adapter as ``method.name=X`` swaps the method: X's defaults,
    the options X shares with the YAML's adapter kept, the other adapter.* overrides after it."""
    lora = resolve("sst2_smollm2", ["adapter.type=lora", "adapter.r=4"]).adapter
    assert lora.adapter_type == "lora" and (lora.r, lora.alpha) == (4, 16)
    prefix = resolve("sst2_smollm2", ["adapter.type=prefix_tuning"]).adapter
    assert prefix.init.startswith("text:Classify the sentiment") and prefix.num_virtual_tokens == 20
    for name in ("glue_cola_smollm2", "sst2_ptcprl_minilm"):
        assert resolve(name, ["adapter.type=lora"]).adapter.adapter_type == "lora"
    with pytest.raises(ConfigError, match="adapter.num_virtual_tokens"):  # a key LoRA has not is still an error
        resolve("sst2_smollm2", ["adapter.type=lora", "adapter.num_virtual_tokens=3"])
    with pytest.raises(ConfigError, match="unknown adapter 'bogus'; registered: conditional_prompt, lora"):
        resolve("sst2_smollm2", ["adapter.type=bogus"])


def test_a_child_yaml_that_changes_the_adapter_type_drops_its_parents_other_options(tmp_path):
    child = _write(tmp_path / "child.yaml", "defaults: [sst2_smollm2]\nadapter:\n  type: lora\n  r: 2\n")
    assert resolve(str(child)).adapter == resolve("sst2_smollm2", ["adapter.type=lora", "adapter.r=2"]).adapter
    prefix = _write(tmp_path / "prefix.yaml", "defaults: [child.yaml]\nadapter:\n  type: prefix_tuning\n")
    assert resolve(str(prefix)).adapter.num_virtual_tokens == 20  # the default: the LoRA parent had none
    assert resolve("cola_lora_smollm2").adapter.adapter_type == "lora"  # shipped: a child of a prompt config


def test_conflicting_spellings_are_an_error_naming_both_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"adapter.num_virtual_tokens=5 and method.n_soft_tokens=10 disagree"):
        resolve("softprompt_ppo_sentiment", ["adapter.num_virtual_tokens=5", "method.n_soft_tokens=10"])
    clash = _write(tmp_path / "clash.yaml", "defaults: softprompt_ppo_sentiment\nadapter:\n  num_virtual_tokens: 20\n"
                                            "method:\n  n_soft_tokens: 8\n")
    with pytest.raises(ConfigError) as e:
        resolve(str(clash))
    assert "method.n_soft_tokens=8 and adapter.num_virtual_tokens=20 disagree" in str(e.value)
    assert str(clash) in str(e.value)
    with pytest.raises(ConfigError, match=r"method.initialize_from_vocab=True and adapter.init='text:"):
        from_dict({"adapter": {"type": "prompt_tuning", "init": "text:Hello"},
                   "method": {"name": "ppo", "initialize_from_vocab": True}})
    # a later layer overrides an earlier one, in either spelling
    child = _write(tmp_path / "child.yaml", "defaults: softprompt_ppo_sentiment\nadapter:\n  num_virtual_tokens: 6\n")
    assert resolve(str(child)).adapter.num_virtual_tokens == 6
    assert resolve(str(child), ["method.n_soft_tokens=9"]).adapter.num_virtual_tokens == 9


def test_keys_a_method_never_reads_are_refused():
    with pytest.raises(ConfigError, match=r"unknown config key 'method.gamma'"):
        from_dict({"method": {"name": "ppo_single_step", "gamma": 0.9}})
    with pytest.raises(ConfigError, match=r"unknown config key 'method.lam'"):
        from_dict({"method": {"name": "ppo_single_step", "lam": 0.5}})
    # a run folder saved before the split kept the inherited defaults: it still loads
    old = from_dict({"method": {"name": "ppo_single_step", "gamma": 1.0, "lam": 0.95}})
    assert not hasattr(old.method_config(), "gamma")
    assert from_dict({"method": {"name": "ppo", "gamma": 0.9}}).method_config().gamma == 0.9


# -- polychromic's multiplicative score -----------------------------------------------------------

POLY = {"name": "polychromic", "n_generations": 4, "set_size": 2, "num_sets": 6, "mode": "multiplicative",
        "diversity": "distinct", "diversity_weight": 1.0}


def test_polychromic_defaults_to_embedding_diversity():
    from softprompt.objectives.polychromic import PolychromicConfig

    assert PolychromicConfig().diversity == "embedding"


def test_multiplicative_polychromic_refuses_rewards_that_can_be_negative(tmp_path):
    backbone = tiny_llama(vocab_size=50)
    signed = rl_config(tmp_path, POLY, rewards=[{"name": "lexicon_sentiment"}])  # VADER's compound is in [-1, 1]
    with pytest.raises(ConfigError, match=r"needs rewards >= 0 .* can be negative: lexicon_sentiment \(weight 1\).*"
                                          r"transform: sigmoid"):
        build_rl(signed, backbone=backbone)
    penalty = rl_config(tmp_path, POLY, rewards=[{"name": "regex_match", "pattern": "great", "weight": -1.0}])
    with pytest.raises(ConfigError, match=r"regex_match \(weight -1\)"):
        build_rl(penalty, backbone=backbone)
    # bounded: a transform, or a reward that is a probability or a match
    for rewards in ([{"name": "lexicon_sentiment", "transform": "sigmoid"}],
                    [{"name": "regex_match", "pattern": "great"}]):
        build_rl(rl_config(tmp_path, POLY, rewards=rewards), backbone=backbone)
    # additive mode and lambda = 0 have no such need
    build_rl(rl_config(tmp_path, {**POLY, "mode": "additive"}, rewards=[{"name": "lexicon_sentiment"}]),
             backbone=backbone)
    build_rl(rl_config(tmp_path, {**POLY, "diversity_weight": 0.0}, rewards=[{"name": "lexicon_sentiment"}]),
             backbone=backbone)


def test_multiplicative_polychromic_checks_a_python_rewards_values(tmp_path):
    from softprompt.objectives.polychromic import Polychromic
    from softprompt.training.rollout import make_rollout

    cfg = rl_config(tmp_path, POLY)
    torch.manual_seed(0)
    work, data = build_rl(cfg, rewards=[lambda p, c, e: [-0.5] * len(c)], backbone=tiny_llama(vocab_size=50))
    ro = make_rollout(work.module, data.train[:2], work.gen, work.rewards)
    with pytest.raises(ConfigError, match=r"method.mode=multiplicative .* needs rewards >= 0, got -0.5 \(prompt 0, "
                                          r"sample 0\)"):
        Polychromic(cfg.method_config()).advantages(ro, step=0)


# -- run ids ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["../../x", "a/b", "..", ".", "a\\b", " "])
def test_run_id_is_a_name_not_a_path(run_id, tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'run_id'=.*expected a folder name"):
        resolve("sst2_smollm2", [f"run_id={run_id!r}" if run_id == " " else f"run_id={run_id}",
                                 f"output_dir={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


def test_a_pipeline_run_id_is_a_name_too(tmp_path):
    from softprompt.commands.stages import Pipeline

    with pytest.raises(ConfigError, match=r"'run_id'='../up'"):
        Pipeline("p", {"stages": [{"name": "a", "config": "sst2_smollm2"}]}, ["run_id=../up"])


# -- held-out prompts ------------------------------------------------------------------------------

def _data_info(tmp_path, prompts: dict, caplog) -> dict:
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 2})
    cfg.prompts = type(cfg.prompts)(**{"source": "list", "items": ["the movie", "the plot"], **prompts})
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        work, _ = build_rl(cfg, rewards=[lambda p, c, e: [0.0] * len(c)], backbone=tiny_llama(vocab_size=50))
    return json.loads(json.dumps(work.data_info))


def test_evaluating_on_training_prompts_is_said_loudly_and_recorded(tmp_path, caplog):
    info = _data_info(tmp_path, {}, caplog)
    assert info["eval_held_out"] is False and info["eval_prompts_in_training"] == 2
    assert info["eval_prompt_texts"] == ["the movie", "the plot"]
    assert "2 of the 2 evaluation prompts are training prompts" in caplog.text
    assert "prompts.eval_items" in caplog.text


def test_held_out_list_prompts(tmp_path, caplog):
    info = _data_info(tmp_path, {"eval_items": ["the actors"]}, caplog)
    assert info["eval_held_out"] is True and info["eval_prompt_texts"] == ["the actors"]
    assert "training prompts" not in caplog.text


def test_a_one_row_prompt_file_warns(tmp_path, caplog):
    from softprompt.tasks.prompts import PromptsSection, held_out_info, load_prompts

    path = _write(tmp_path / "one.txt", "the movie was\n")
    train, evaluation = load_prompts(PromptsSection(source="file", file=str(path)))
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        info = held_out_info(train, evaluation, str(path))
    assert info["eval_held_out"] is False and "1 of the 1 evaluation prompts" in caplog.text


def test_the_rl_run_folder_records_its_evaluation_prompts(tmp_path):
    from conftest import save_backbone

    from softprompt.training.assemble import make_trainer

    save_backbone(tiny_llama(vocab_size=50), tmp_path / "model")
    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 2},
                    rewards=[{"name": "regex_match", "pattern": "great"}], run_id="r")
    cfg.model, cfg.train.epochs, cfg.train.max_steps = str(tmp_path / "model"), 1, 1
    trainer = make_trainer(cfg, progress=False)
    trainer.fit(progress=False)
    data = json.loads((trainer.run.path / "data.json").read_text())
    assert data["eval_held_out"] is False and len(data["eval_prompt_texts"]) == data["eval_prompts"] > 0
