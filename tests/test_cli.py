"""The command line: generation from a local model dir and an adapter, one-line errors."""

import subprocess
import sys

from conftest import save_backbone, tiny_llama

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.commands.cli import main


def _save_tiny(tmp_path):
    backbone = tiny_llama()
    save_backbone(backbone, tmp_path / "model")
    return backbone


def test_generate_from_local_dir_with_adapter(tmp_path, capsys):
    backbone = _save_tiny(tmp_path)
    model = SoftPromptModel.from_backbone(backbone, PromptTuningConfig(num_virtual_tokens=3, init="random"))
    model.save_pretrained(tmp_path / "adapter")
    code = main(["generate", "--model", str(tmp_path / "model"), "--adapter", str(tmp_path / "adapter"),
                 "--prompt", "the movie was", "i loved it", "--greedy", "--max-new-tokens", "5",
                 "--num-samples", "2"])
    assert code == 0
    shown = capsys.readouterr().out
    assert "the movie was" in shown and "tokens/s" in shown
    expected = model.generate(["the movie was"], max_new_tokens=5, do_sample=False).texts[0].strip()
    assert expected in shown


def test_errors_are_one_line_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "softprompt", "generate", "--model", "no-such-model",
                          "--prompt", "hi"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("error: model 'no-such-model' is not in the local Hugging Face cache")
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "softprompt_adapter.json").write_text('{"adapter_type": "prompt_tuning"}')
    run = subprocess.run([sys.executable, "-m", "softprompt", "generate", "--adapter", str(tmp_path / "adapter"),
                          "--prompt", "hi"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "missing key 'config'" in run.stderr and "Traceback" not in run.stderr


def test_configuration_reference_page_is_current(capsys):
    """docs/configuration.md is generated; regenerate with: softprompt config-reference > docs/configuration.md"""
    from pathlib import Path

    assert main(["config-reference"]) == 0
    page = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    out = capsys.readouterr().out
    assert "`method.diversity_weight`" in out and "`train.max_bad_steps`" in out
    assert page.read_text() == out, "docs/configuration.md is stale: softprompt config-reference > docs/configuration.md"


def test_every_command_prints_its_help():
    """argparse formats help strings with %: a bare % in one (``deltas in %``) broke ``softprompt --help``."""
    import argparse

    from softprompt.commands.cli import build_parser

    parser = build_parser()
    assert "compare" in parser.format_help()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subs.choices) >= 10
    for name, sub in subs.choices.items():
        assert sub.format_help().startswith("usage: softprompt " + name), name
