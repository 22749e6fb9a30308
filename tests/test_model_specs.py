"""Hub ids as the Hub spells them (``gpt2``, ``org/name``) load from the Hugging Face cache; offline, a
model that is not there fails in one line before anything loads, and a config's every model is
checked before a run or a pipeline's first stage creates its folder."""

import json
import socket

import pytest
import torch
from conftest import put_in_hub_cache, save_backbone, tiny_llama, tiny_tokenizer

from softprompt import ModelLoadError, load_backbone
from softprompt.commands.cli import main
from softprompt.modeling.backbones import check_model_spec, resolve


@pytest.fixture
def no_network(monkeypatch):
    """Every connection or name lookup fails and is recorded: the test asserts the list stays empty."""
    asked = []

    def refuse(*args, **kw):
        asked.append(args)
        raise AssertionError("the network was asked")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


@pytest.fixture
def hub_requests(monkeypatch):
    """Every request for a file's metadata on the hub (what a download asks first) is recorded and fails."""
    import huggingface_hub.file_download as download

    asked = []

    def refuse(url, *args, **kw):
        asked.append(url)
        raise AssertionError(f"asked the hub for {url}")
    monkeypatch.setattr(download, "get_hf_file_metadata", refuse)
    return asked


def save_tiny_gpt2(folder):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = tiny_tokenizer("left")
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=64, n_positions=128,
                                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                       bos_token_id=tok.bos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def save_tiny_bert(folder):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=128)).save_pretrained(folder)
    tiny_tokenizer("right").save_pretrained(folder)


def test_bare_legacy_id_loads_from_the_hub_cache_offline(hub_cache, hub_requests, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # HF_HUB_OFFLINE=1 set after huggingface_hub read it
    saved = {}
    put_in_hub_cache(hub_cache, "gpt2", lambda d: saved.setdefault("model", save_tiny_gpt2(d)))
    check_model_spec("gpt2")
    backbone = load_backbone("gpt2")
    assert backbone.kind == "causal_lm" and backbone.path == "gpt2" and backbone.text_config.model_type == "gpt2"
    assert torch.equal(backbone.model.transformer.wte.weight, saved["model"].transformer.wte.weight)
    assert backbone.pooling is None  # no modules.json, no 1_Pooling: no card pooling, no error
    assert hub_requests == []  # nothing asked of the hub, although its own constant says online


def test_bare_legacy_id_of_an_encoder_loads_as_one(hub_cache):
    put_in_hub_cache(hub_cache, "bert-base-uncased", save_tiny_bert)
    backbone = load_backbone("bert-base-uncased")
    assert backbone.kind == "encoder" and backbone.config.architectures == ["BertModel"]


def test_org_name_id_loads_from_the_hub_cache(hub_cache):
    put_in_hub_cache(hub_cache, "HuggingFaceTB/SmolLM-135M", lambda d: save_backbone(tiny_llama(), d))
    assert load_backbone("HuggingFaceTB/SmolLM-135M").text_config.model_type == "llama"


def test_a_local_directory_wins_over_a_cached_hub_id(hub_cache, tmp_path, monkeypatch):
    put_in_hub_cache(hub_cache, "gpt2", save_tiny_gpt2)
    save_backbone(tiny_llama(), tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    assert load_backbone("gpt2").text_config.model_type == "llama"


@pytest.mark.parametrize("spec", ["gpt2", "google/gemma-3-1b-it"])
def test_an_uncached_hub_id_offline_fails_in_one_line(hub_cache, spec):
    for call in (check_model_spec, load_backbone):
        with pytest.raises(ModelLoadError) as err:
            call(spec)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1
        assert f"model {spec!r} is not in the local Hugging Face cache ({hub_cache})" in msg
        assert "HF_HUB_OFFLINE=1" in msg and f"hf download {spec}" in msg


@pytest.mark.parametrize("var, value", [("HF_HUB_OFFLINE", "yes"), ("TRANSFORMERS_OFFLINE", "TRUE")])
def test_offline_is_read_from_the_environment_when_checked(hub_cache, monkeypatch, var, value):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as read at import, before the variable was set
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv(var, value)
    with pytest.raises(ModelLoadError, match=f"{var}={value} forbids downloading"):
        check_model_spec("gpt2")


def test_online_the_check_asks_no_network(hub_cache, monkeypatch, no_network):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    check_model_spec("gpt2")  # not cached, but online it may download: passes unasked
    check_model_spec("org/name")
    assert no_network == []


def test_a_misspelt_alias_gets_did_you_mean(hub_cache):
    with pytest.raises(ModelLoadError, match="did you mean 'smollm2-135m-instruct'") as err:
        load_backbone("smollm2-135m-instruc")
    assert "minilm-l6" in str(err.value)  # the aliases are listed
    put_in_hub_cache(hub_cache, "minilm-l12", save_tiny_bert)  # a cached repo of a name near an alias is that repo
    assert resolve("minilm-l12") == ("minilm-l12", None, None)
    with pytest.raises(ModelLoadError, match="did you mean 'minilm-l6'"):
        resolve("minilm-l7")


@pytest.mark.parametrize("spec", ["a b", "../x", "a--b", "x..y", "a/b/c", "x" * 97, "-x"])
def test_a_spec_that_is_no_hub_id_is_unknown(hub_cache, spec):
    with pytest.raises(ModelLoadError, match=r"unknown model spec .*a hub id \('gpt2', 'org/name'"):
        check_model_spec(spec)


def test_a_missing_gguf_file_is_named(hub_cache, tmp_path):
    with pytest.raises(ModelLoadError, match="model.gguf does not exist"):
        check_model_spec(str(tmp_path / "model.gguf"))


@pytest.mark.parametrize("modules", [None, "2_Pool"])
def test_pooling_comes_from_a_cached_hub_repos_model_card(hub_cache, modules):
    """The sentence-transformers card of a hub id (Qwen3-Embedding: last-token pooling), read from the
    cache: its Pooling module where modules.json puts it, else 1_Pooling."""
    def save(folder):
        backbone = tiny_llama()
        backbone.model.model.save_pretrained(folder)  # the bare LlamaModel, as embedding models ship
        backbone.tokenizer.save_pretrained(folder)
        pool = folder / (modules or "1_Pooling")
        pool.mkdir()
        (pool / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}))
        if modules:
            (folder / "modules.json").write_text(json.dumps([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": modules, "type": "sentence_transformers.models.Pooling"}]))
    put_in_hub_cache(hub_cache, "Qwen/Qwen3-Embedding-4B", save)
    backbone = load_backbone("Qwen/Qwen3-Embedding-4B")
    assert backbone.kind == "encoder" and backbone.pooling == "last"


# --------------------------------------------------------------------------- before any folder


def test_model_specs_of_a_config_name_the_models_it_loads():
    from softprompt.commands.stages import load_pipeline
    from softprompt.experiment import resolve as resolve_config
    from softprompt.training.preflight import model_specs

    ppo = dict(model_specs(load_pipeline("hard2soft_ppo").configs["ppo"]))
    assert ppo == {"model.name": "smollm2-135m-instruct", "judge.run": "smollm2-135m-instruct"}  # rm: not yet trained
    grpo = dict(model_specs(load_pipeline("rlpt_cola").configs["grpo"]))
    assert grpo == {"model.name": "smollm2-135m-instruct", "rewards[1].model": "minilm-l6"}
    poly = dict(model_specs(resolve_config("polychromic_baseline", ["method.diversity_weight=1.0"])))
    assert poly["method.embedding_model"] == "minilm-l6"


def _train(args, capsys) -> str:
    assert main(["train", *args]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1
    return out.err


def _folders(root) -> list[str]:
    """Everything under ``root/experiments`` (the default output_dir): run folders, pipeline folders."""
    return sorted(str(p.relative_to(root)) for p in (root / "experiments").rglob("*"))


@pytest.mark.parametrize("name, stage, spec", [("hard2soft_ppo", "rm", "bert-base-uncased"),
                                               ("rlpt_cola", "sft", "HuggingFaceTB/SmolLM-135M"),
                                               ("polychromic", "baseline", "Qwen/Qwen3-8B")])
def test_a_paper_pipeline_offline_fails_before_any_folder(hub_cache, tmp_path, monkeypatch, capsys, name, stage,
                                                          spec):
    monkeypatch.chdir(tmp_path)
    err = _train(["--config-name", name, "--preset", "paper", "--no-progress"], capsys)
    assert _folders(tmp_path) == []
    assert err.startswith(f"error: {name}: stage {stage!r}: model.name: model {spec!r} is not in the local")
    assert "HF_HUB_OFFLINE" in err


def test_a_later_stages_model_is_checked_before_the_first_stage_runs(hub_cache, tmp_path, monkeypatch, capsys):
    put_in_hub_cache(hub_cache, "bert-base-uncased", save_tiny_bert)  # the rm stage could run
    monkeypatch.chdir(tmp_path)
    err = _train(["--config-name", "hard2soft_ppo", "--preset", "paper", "--no-progress",
                  "rm.preferences.max_train_pairs=8", "rm.train.max_steps=1"], capsys)
    assert _folders(tmp_path) == []
    assert "stage 'ppo': model.name: model 'google/gemma-3-1b-it'" in err and "HF_HUB_OFFLINE" in err


def test_a_single_run_paper_preset_offline_fails_before_its_folder(hub_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _train(["--config-name", "softprompt_ppo_sentiment", "--preset", "paper", "--no-progress"], capsys)
    assert _folders(tmp_path) == []
    assert err.startswith("error: model.name: model 'gpt2' is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE" in err
