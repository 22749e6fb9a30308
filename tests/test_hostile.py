"""Hostile input: every data reader, fed random bytes, wrong encodings, missing or extra columns,
huge fields and empty files, either reads the file or raises the project's own error naming the
file (and line) -- never a raw traceback, never a hang. Configs choose components from
registries only."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softprompt.errors import ConfigError, SoftPromptError
from softprompt.tasks.data import read_glue, read_table
from softprompt.tasks.preferences import read_preferences
from softprompt.tasks.prompts import read_prompt_file

SETTINGS = settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _readers(folder: Path):
    """(extension, read(path)) for every reader of user files."""
    def glue(path: Path):
        root = folder / "glue"
        (root / "SST-2").mkdir(parents=True, exist_ok=True)
        (root / "SST-2" / "train.tsv").write_bytes(path.read_bytes())
        return read_glue("sst2", "train", root)

    return [
        (".csv", lambda p: read_table(p, "text", "label")),
        (".tsv", lambda p: read_table(p, "text", "label")),
        (".jsonl", lambda p: read_table(p, "text", "label")),
        (".tsv", glue),
        (".csv", read_preferences),
        (".jsonl", read_preferences),
        (".xlsx", read_preferences),
        (".txt", read_prompt_file),
        (".jsonl", read_prompt_file),
        (".csv", read_prompt_file),
    ]


def _check(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for ext, read in _readers(folder):
            path = folder / f"input{ext}"
            path.write_bytes(data)
            try:
                read(path)  # reading it is fine; any error must be the project's own, naming the file
            except SoftPromptError as e:
                assert path.name in str(e) or "train.tsv" in str(e), (ext, str(e))


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data):
    _check(data)


# text that looks like the right format but is not quite
_cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@SETTINGS
@given(st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=8),
       st.sampled_from([",", "\t"]), st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_tables_with_random_cells_columns_and_encodings(rows, sep, encoding):
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep).writerows(rows)
    _check(buf.getvalue().encode(encoding, errors="replace"))


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(["text", "label", "prompt", "chosen", "rejected", "extra",
                                                  "context_messages", "policy_response", "reference_response",
                                                  "human_eval"]),
                                st.one_of(_cell, st.integers(-5, 5), st.none(), st.floats(allow_nan=True),
                                          st.lists(_cell, max_size=2))),
                max_size=6))
def test_json_lines_with_missing_extra_and_odd_values(records):
    _check("".join(json.dumps(r) + "\n" for r in records).encode())


def test_huge_field_and_empty_files(tmp_path):
    huge = "x" * 2_000_000
    path = tmp_path / "big.csv"
    path.write_text(f"text,label\n{huge},1\n")
    assert read_table(path, "text", "label")[0].text == huge  # read whole; truncation happens at tokenization
    for ext in (".csv", ".tsv", ".jsonl", ".txt", ".xlsx"):
        empty = tmp_path / f"empty{ext}"
        empty.write_bytes(b"")
        for read in (lambda p: read_table(p, "text", "label"), read_preferences, read_prompt_file):
            try:
                out = read(empty)
            except SoftPromptError as e:
                assert empty.name in str(e)
            else:
                assert out == [] or not getattr(out, "pairs", None)


def test_configs_cannot_name_arbitrary_code(tmp_path):
    from softprompt.experiment import from_dict, resolve

    for section in ({"method": {"name": "os.system"}}, {"rewards": [{"name": "os.system", "command": "ls"}]},
                    {"adapter": {"type": "builtins.eval"}}):
        with pytest.raises(ConfigError, match="os.system|builtins.eval"):
            cfg = from_dict({"model": "tiny", **section})
            cfg.method_config()
            cfg.adapter_config()
            from softprompt.rewards import RewardSet

            RewardSet.from_config(cfg.rewards)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError):
        resolve(str(bad), [])


class _Exploit:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickle_weights_are_refused_until_converted_with_weights_only(tmp_path, capsys):
    import torch
    from conftest import tiny_llama

    from softprompt.commands.cli import main
    from softprompt.errors import ModelLoadError
    from softprompt.modeling.backbones import load_backbone

    original = tiny_llama()
    folder = tmp_path / "pickled"
    original.model.save_pretrained(folder)  # transformers 5 writes safetensors only: make the old layout by hand
    original.tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(original.model.state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="only as pickle files .*softprompt convert-weights"):
        load_backbone(str(folder))
    assert main(["convert-weights", str(folder)]) == 0
    loaded = load_backbone(str(folder))
    ids = torch.tensor([[7, 8, 9, 10]])
    torch.testing.assert_close(loaded.model(ids).logits, original.model(ids).logits)

    marker = tmp_path / "hacked"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Exploit(marker)}, evil)
    assert main(["convert-weights", str(evil)]) == 2
    assert "refused or unreadable with torch.load(weights_only=True)" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()


def test_overlong_examples_are_truncated_with_a_counted_warning(tmp_path, caplog):
    from conftest import save_backbone, tiny_llama
    from test_trainer import config

    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    raw = config(tmp_path, model_dir, method={"name": "mle"}, train={"epochs": 1})
    raw["task"]["max_length"] = 4  # the fixture's sentences are 2-4 words + " :"
    with caplog.at_level("WARNING", logger="softprompt"):
        trainer = make_trainer(from_dict(raw), progress=False)
    info = trainer.work.data_info
    assert 0 < info["train_truncated"] < info["train_examples"] and info["max_length"] == 4
    assert f"{info['train_truncated']} of {info['train_examples']} train" in caplog.text
    trainer.fit(progress=False)
    assert json.loads((trainer.run.path / "data.json").read_text())["train_truncated"] == info["train_truncated"]


def test_overlong_preference_rows_are_counted(tmp_path, caplog):
    from conftest import save_backbone, tiny_bert
    from test_reward_model import rm_config

    from softprompt.training.assemble import make_trainer

    cfg = rm_config(tmp_path, save_backbone(tiny_bert(), tmp_path / "bert"))
    cfg.preferences.max_length = 8
    with caplog.at_level("WARNING", logger="softprompt"):
        trainer = make_trainer(cfg, progress=False)
    info = trainer.work.data_info
    assert info["max_length"] == 8 and 0 < info["train_truncated"] <= info["train_rows"] == 2 * info["train_pairs"]
    assert "longer than preferences.max_length=8 tokens" in caplog.text


def test_overlong_rl_prompts_are_counted(tmp_path, caplog):
    from conftest import tiny_llama
    from test_rl import rate_of_great, rl_config

    from softprompt.training.assemble import build_rl

    cfg = rl_config(tmp_path, {"name": "grpo", "group_size": 2}, generation={"max_new_tokens": 4,
                                                                             "max_prompt_tokens": 3})
    with caplog.at_level("WARNING", logger="softprompt"):
        work, _ = build_rl(cfg, rewards=[rate_of_great], backbone=tiny_llama())
    assert work.data_info["train_truncated"] > 0 and "generation.max_prompt_tokens=3" in caplog.text
