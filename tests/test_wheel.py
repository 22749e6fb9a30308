"""The built wheel carries the experiment configs: installed into a throwaway folder and run from
an empty directory (no ./configs, no repository around it), every shipped config resolves and
trains. Builds the wheel once for the module (about 10 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the installed wheel, an empty working directory, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(tree)],
                   check=True, capture_output=True, timeout=600)
    wheel = next((tmp / "dist").glob("softprompt-*.whl"))
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return site, cwd, env


def _python(installed, code: str, timeout: int = 600) -> str:
    site, cwd, env = installed
    check = f"import softprompt; assert softprompt.__file__.startswith({str(site)!r}), softprompt.__file__\n"
    out = subprocess.run([sys.executable, "-c", check + code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_the_installed_wheel_lists_and_resolves_every_shipped_config(installed):
    shipped = sorted(p.stem for p in (ROOT / "src" / "softprompt" / "configs").glob("*.yaml"))
    listed = _python(installed, "from softprompt.commands.cli import main; main(['configs'])")
    assert [line.split()[0] for line in listed.splitlines()[:len(shipped)]] == shipped
    resolved = _python(installed, """
from softprompt.commands.stages import load_pipeline
from softprompt.config import config_names
from softprompt.experiment import resolve
for name in config_names():
    pipe = load_pipeline(name)
    configs = list(pipe.configs.values()) if pipe is not None else [resolve(name)]
    assert configs and all((c.adapter.r if c.adapter.adapter_type == 'lora' else c.adapter.num_virtual_tokens) > 0
                           for c in configs), name
    print(name)
""")
    assert resolved.split() == shipped


def test_the_installed_wheel_ships_its_prompt_data(installed):
    """The built-in prompt sources read package data (review topics, capitals.tsv): the wheel carries it."""
    counts = _python(installed, """
from softprompt.tasks.prompts import PromptsSection, load_prompts
for source in ("review_requests", "capitals"):
    train, held_out = load_prompts(PromptsSection(source=source, num_train=10_000, num_eval=20))
    print(source, len(train) + len(held_out))
""")
    assert counts.split() == ["review_requests", "400", "capitals", "116"]


def _train(installed, args: list[str]):
    return _python(installed, f"import sys; from softprompt.commands.cli import main; sys.exit(main({args!r}))")


@pytest.mark.integration
def test_the_installed_wheel_trains_the_main_job_and_sst2(installed):
    site, cwd, _ = installed
    _train(installed, ["train", "--config-name", "sentiment_steering", "--no-progress", "run_id=wheel",
                       "train.max_steps=1", "train.batch=2", "method.num_generations=2", "prompts.num_train=4",
                       "prompts.num_eval=2", "generation.max_new_tokens=4", "generation.eval_samples=1"])
    assert (cwd / "experiments" / "smollm2-135m-instruct" / "review_openings" / "grpo" / "wheel"
            / "metrics.json").is_file()
    if not SHARED_GLUE.is_dir():
        pytest.skip("shared GLUE folder not present")
    _train(installed, ["train", "--config-name", "sst2_smollm2", "--no-progress", "run_id=wheel",
                       f"task.data_dir={SHARED_GLUE}", "task.max_train_examples=8", "task.max_eval_examples=8",
                       "train.max_steps=2", "train.batch=4", "train.eval_batch=8"])
    assert (cwd / "experiments" / "smollm2-135m-instruct" / "sst2" / "mle" / "wheel" / "metrics.json").is_file()
