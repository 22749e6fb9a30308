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
        assert config.adapter_config().num_virtual_tokens > 0
        config.schedule()


@pytest.mark.parametrize("prefix", ["method", "method_cfg"])
def test_seed_overrides(prefix):
    config = resolve("sst2_ptcprl_minilm", ["train.batch=4", "train.epochs=2", f"{prefix}.num_virtual_tokens=10",
                                            f"{prefix}.rl_subset_size=8", f"{prefix}.k_negatives=1"])
    assert config.train.batch == 4 and config.train.epochs == 2
    assert config.adapter_config().num_virtual_tokens == 10
    assert config.objectives()["contrastive"].k_negatives == 1
    assert config.objectives()["label_reinforce"].rl_subset_size == 8
