"""Every numeric config key declares its valid range where it is declared (``hfield(..., ge=1)``),
and one check refuses a value outside it before anything runs, with a one-line error."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import subprocess
import sys

import pytest

import softprompt
from softprompt.config.fields import Range, check_ranges, field_range, hfield
from softprompt.errors import ConfigError
from softprompt.experiment import resolve


def _config_dataclasses():
    """Every dataclass of the package with help-text fields (the config sections and options)."""
    seen = []
    for info in pkgutil.walk_packages(softprompt.__path__, "softprompt."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
                    and obj not in seen and any("help" in f.metadata for f in dataclasses.fields(obj))):
                seen.append(obj)
    return seen


def _numeric(f: dataclasses.Field) -> bool:
    text = f.type if isinstance(f.type, str) else str(f.type)
    return ("int" in text or "float" in text) and not text.startswith(("dict", "Literal"))  # Literal['float32', ...]


def test_every_numeric_key_declares_a_range_and_its_default_lies_in_it():
    classes = _config_dataclasses()
    assert len(classes) > 20  # the walk found the config sections, methods, adapters, rewards
    missing, bad_defaults = [], []
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata or not _numeric(f):
                continue
            if field_range(f) is None:
                missing.append(f"{cls.__name__}.{f.name}")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            try:
                check_ranges(cls, {f.name: default})
            except ConfigError as e:
                bad_defaults.append(str(e))
    assert not missing, f"numeric keys without a declared range: {missing}"
    assert not bad_defaults


@pytest.mark.parametrize("override, message", [
    ("train.batch=-3", "config key 'train.batch'=-3: expected an integer >= 1"),
    ("train.batch=0", "'train.batch'=0: expected an integer >= 1"),
    ("train.epochs=0", "'train.epochs'=0: expected an integer >= 1"),
    ("train.max_steps=0", "'train.max_steps'=0: expected an integer >= 1"),
    ("train.lr=-0.01", "'train.lr'=-0.01: expected a number >= 0"),
    ("train.lr=.inf", "'train.lr'=inf: expected a number >= 0"),
    ("train.lr=.nan", "'train.lr'=nan: expected a number >= 0"),
    ("train.warmup_ratio=1.5", "'train.warmup_ratio'=1.5: expected a number in [0, 1]"),
    ("train.grad_accum=0", "'train.grad_accum'=0: expected an integer >= 1"),
    ("generation.max_new_tokens=0", "'generation.max_new_tokens'=0: expected an integer >= 1"),
    ("generation.temperature=0", "'generation.temperature'=0.0: expected a number > 0"),
    ("generation.top_p=0", "'generation.top_p'=0.0: expected a number in (0, 1]"),
    ("task.max_length=0", "'task.max_length'=0: expected an integer >= 1"),
    ("adapter.num_virtual_tokens=0", "'adapter.num_virtual_tokens'=0: expected an integer >= 1"),
    ("adapter.dropout=1.0", "'adapter.dropout'=1.0: expected a number in [0, 1)"),
    ("method.mle_weight=-1", "'method.mle_weight'=-1.0: expected a number >= 0"),
    ("method.contrastive_temperature=0", "'method.contrastive_temperature'=0.0: expected a number > 0"),
    ("method.temperature=0", "'method.contrastive_temperature'=0.0: expected a number > 0"),  # the older spelling
    ("method.k_negatives=0", "'method.k_negatives'=0: expected an integer >= 1"),
    ("seed=-1", "'seed'=-1: expected an integer >= 0"),
])
def test_bad_numbers_in_a_classification_config(override, message):
    with pytest.raises(ConfigError) as e:
        resolve("ptcprl_sst2", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("config, override, message", [
    ("sentiment_steering", "method.num_generations=1", "'method.num_generations'=1: expected an integer >= 2"),
    ("sentiment_steering", "method.group_size=1", "'method.num_generations'=1: expected an integer >= 2"),
    ("sentiment_steering", "method.epsilon=0", "'method.epsilon'=0.0: expected a number in (0, 1)"),
    ("sentiment_steering", "method.beta=-0.1", "'method.beta'=-0.1: expected a number >= 0"),
    ("sentiment_steering", "method.num_iterations=0", "'method.num_iterations'=0: expected an integer >= 1"),
    ("softprompt_ppo_sentiment", "method.cliprange=-0.2", "'method.epsilon'=-0.2: expected a number in (0, 1)"),
    ("softprompt_ppo_sentiment", "method.lam=1.5", "'method.lam'=1.5: expected a number in [0, 1]"),
    ("softprompt_ppo_sentiment", "method.num_layers_unfrozen=-1",
     "'method.num_layers_unfrozen'=-1: expected an integer >= 0"),
    ("polychromic_baseline", "method.n_generations=1", "'method.num_generations'=1: expected an integer >= 2"),
    ("polychromic_baseline", "method.diversity_weight=-1", "'method.diversity_weight'=-1.0: expected a number >= 0"),
    ("polychromic_baseline", "prompts.num_eval=0", "'prompts.num_eval'=0: expected an integer >= 1"),
    ("sentiment_steering", "rewards=[{name: lexicon_sentiment, weight: .inf}]",
     "'rewards[0].weight'=inf: expected a finite number"),
    ("reward_pairwise", "preferences.eval_ratio=1", "'preferences.eval_ratio'=1.0: expected a number in (0, 1)"),
])
def test_bad_numbers_in_rl_and_reward_model_configs(config, override, message):
    with pytest.raises(ConfigError) as e:
        resolved = resolve(config, [override])
        if override.startswith("rewards"):  # reward items are built with the rewards
            from softprompt.rewards import RewardSet

            RewardSet.from_config(resolved.rewards)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_python_constructed_configs_check_their_ranges_too():
    from softprompt import PromptTuningConfig
    from softprompt.modeling.generation import GenerationConfig
    from softprompt.objectives.contrastive import ContrastiveConfig

    with pytest.raises(ConfigError, match=r"'adapter.num_virtual_tokens'=2.5: expected an integer >= 1"):
        PromptTuningConfig(num_virtual_tokens=2.5)
    with pytest.raises(ConfigError, match=r"'generation.top_k'=-1: expected an integer >= 0"):
        GenerationConfig(top_k=-1)
    with pytest.raises(ConfigError, match=r"'contrastive.drop_fraction'=1.0: expected a number in \(0, 1\)"):
        ContrastiveConfig(drop_fraction=1.0)


def test_range_descriptions_and_list_items():
    @dataclasses.dataclass
    class Section:
        weights: list[float] = hfield([1.0], "per-class weights", ge=0)
        p: float = hfield(0.5, "a probability", gt=0, lt=1)

    check_ranges(Section, {"weights": [0.0, 2.0], "p": 0.3})
    with pytest.raises(ConfigError, match=r"'s.weights'=\[1.0, -2.0\]: expected each item a number >= 0"):
        check_ranges(Section, {"weights": [1.0, -2.0]}, "s")
    with pytest.raises(ConfigError, match=r"'p'=1.0: expected a number in \(0, 1\)"):
        check_ranges(Section, {"p": 1.0})
    assert Range(0, 1, low_open=True).short() == "(0, 1]" and Range(1).describe(True) == "an integer >= 1"
    with pytest.raises(TypeError):
        hfield(1, "both bounds", ge=0, gt=0)


def test_cli_refuses_a_bad_number_at_once_and_writes_no_run_folder(tmp_path):
    run = subprocess.run([sys.executable, "-m", "softprompt", "train", "--config-name", "sst2_smollm2",
                          "train.batch=-3", "train.max_steps=2", f"output_dir={tmp_path / 'runs'}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["error: config key 'train.batch'=-3: expected an integer >= 1"], run.stderr
    assert not (tmp_path / "runs").exists()
