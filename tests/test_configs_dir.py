"""Every shipped config resolves, and the seed's override spellings work."""

import pytest

from softprompt.config import config_names
from softprompt.experiment import resolve


@pytest.mark.parametrize("name", config_names())
def test_shipped_config_resolves(name):
    from softprompt.commands.stages import load_pipeline

    pipe = load_pipeline(name)  # a multi-stage config: every training stage resolves
    configs = list(pipe.configs.values()) if pipe is not None else [resolve(name)]
    assert configs
    for config in configs:
        adapter = config.adapter_config()
        assert adapter.r > 0 if adapter.adapter_type == "lora" else adapter.num_virtual_tokens > 0
        config.schedule()


@pytest.mark.parametrize("prefix", ["method", "method_cfg"])
def test_seed_overrides(prefix):
    config = resolve("sst2_ptcprl_minilm", ["train.batch=4", "train.epochs=2", f"{prefix}.num_virtual_tokens=10",
                                            f"{prefix}.rl_subset_size=8", f"{prefix}.k_negatives=1"])
    assert config.train.batch == 4 and config.train.epochs == 2
    assert config.adapter_config().num_virtual_tokens == 10
    assert config.objectives()["contrastive"].k_negatives == 1
    assert config.objectives()["label_reinforce"].rl_subset_size == 8


# -- softprompt configs: what --config-name finds, and one config to copy -----------------------------

def test_configs_lists_every_shipped_config_with_its_description(capsys):
    from softprompt.commands.cli import main
    from softprompt.config import PACKAGE_CONFIGS, config_description

    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    shipped = sorted(p.stem for p in PACKAGE_CONFIGS.glob("*.yaml"))
    assert len(shipped) >= 20
    for name in shipped:
        description = config_description(PACKAGE_CONFIGS / f"{name}.yaml")
        assert description and not description.startswith("#"), f"{name}.yaml has no top comment"
        assert any(line.split() and line.split()[0] == name and line.rstrip().endswith(description)
                   for line in out.splitlines()), name


def test_a_local_configs_folder_comes_first_and_is_listed(tmp_path, monkeypatch, capsys):
    from softprompt.commands.cli import main

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sst2_smollm2.yaml").write_text("# my own SST-2\ndefaults: glue_cola_smollm2\n")
    (tmp_path / "configs" / "mine.yaml").write_text("# mine: CoLA with 5 tokens\ndefaults: glue_cola_smollm2\n"
                                                   "adapter: {num_virtual_tokens: 5}\n")
    monkeypatch.chdir(tmp_path)
    assert resolve("sst2_smollm2").task.name == "cola"  # ./configs shadows the shipped one of that name
    assert resolve("mine").adapter.num_virtual_tokens == 5  # its defaults come from the package
    assert main(["configs"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "mine: CoLA with 5 tokens" in lines["mine"] and str(tmp_path / "configs") in lines["mine"]
    assert "my own SST-2" in lines["sst2_smollm2"] and "rlpt_cola" in lines


def test_configs_show_prints_a_resolved_config_that_resolves_back_to_itself(tmp_path, monkeypatch, capsys):
    from softprompt.commands.cli import main
    from softprompt.config import to_dict

    assert main(["configs", "show", "ptcprl_sst2", "--preset", "paper", "train.batch=4"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# ptcprl_sst2: PTCPRL (source experiment 1)")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "copy.yaml").write_text(shown)  # a user copies it and edits it
    monkeypatch.chdir(tmp_path)
    expected = resolve("ptcprl_sst2", ["train.batch=4"], preset="paper")
    assert to_dict(resolve("copy")) == to_dict(expected)
    assert expected.train.batch == 4 and expected.model != resolve("ptcprl_sst2").model


def test_configs_show_a_pipeline_as_written_or_its_stages_resolved(capsys):
    from softprompt.commands.cli import main
    from softprompt.config import PACKAGE_CONFIGS

    assert main(["configs", "show", "rlpt_cola"]) == 0
    assert capsys.readouterr().out == (PACKAGE_CONFIGS / "rlpt_cola.yaml").read_text()
    assert main(["configs", "show", "rlpt_cola", "grpo.train.max_steps=3"]) == 0
    docs = capsys.readouterr().out.split("\n---\n")
    assert [d.split("# stage ")[1].split()[0] for d in docs] == ["sft", "grpo"]
    assert "max_steps: 3" in docs[1] and "max_steps: 3" not in docs[0]
    assert main(["configs", "show", "no_such_config"]) == 2
