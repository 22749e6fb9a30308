"""Prompt tuning to and from PEFT's adapter format.

PEFT stores a prompt-tuning adapter as ``adapter_config.json`` plus
``adapter_model.safetensors`` holding one tensor, ``prompt_embeddings`` (n, H).
``peft.PeftModel.from_pretrained(base, directory)`` loads what :func:`export_peft`
writes; on unpadded (or right-padded) inputs it gives our logits, since both put the
virtual tokens right before the first real token there.
"""

from __future__ import annotations

from pathlib import Path

from ..adapters import PromptTuning, PromptTuningConfig, build_adapter
from ..errors import AdapterLoadError
from ..storage import load_tensors, read_json, save_tensors, write_json
from .backbones import trained_layers
from .model import SoftPromptModel

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def export_peft(model, directory: str | Path) -> Path:
    """Write ``model``'s prompt-tuning adapter in PEFT's format."""
    adapter = model.adapter
    if not isinstance(adapter, PromptTuning):
        kind = adapter.config.adapter_type if adapter is not None else "no adapter"
        raise AdapterLoadError(f"PEFT export supports prompt_tuning adapters, this model has {kind}")

    if layers := trained_layers(model.model):
        raise AdapterLoadError(f"PEFT export writes the prompt alone; this model also trained transformer blocks "
                               f"{layers} (num_layers_unfrozen), which the export would drop")
    directory = Path(directory)
    backbone = model.backbone
    save_tensors(directory / PEFT_WEIGHTS, {"prompt_embeddings": adapter.embeddings}, metadata={"format": "pt"})
    write_json(directory / PEFT_CONFIG, {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM" if backbone.is_causal else "FEATURE_EXTRACTION",
        "num_virtual_tokens": adapter.config.num_virtual_tokens,
        "token_dim": backbone.hidden_size,
        "num_transformer_submodules": 1,
        "num_attention_heads": backbone.num_attention_heads,
        "num_layers": backbone.num_layers,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": backbone.path,
        "inference_mode": True,
        "revision": None,
        "auto_mapping": None,
        "modules_to_save": None,
    })
    return directory


def import_peft(directory: str | Path, backbone):
    """Load a PEFT prompt-tuning adapter onto ``backbone``; returns a SoftPromptModel."""
    directory = Path(directory)
    meta = read_json(directory / PEFT_CONFIG, "PEFT adapter config")
    if meta.get("peft_type") != "PROMPT_TUNING":
        raise AdapterLoadError(f"{directory / PEFT_CONFIG}: peft_type is {meta.get('peft_type')!r}, "
                               "only PROMPT_TUNING can be imported")
    if meta.get("num_transformer_submodules", 1) != 1:
        raise AdapterLoadError(f"{directory / PEFT_CONFIG}: num_transformer_submodules must be 1 (decoder or encoder)")
    if not (directory / PEFT_WEIGHTS).exists() and (directory / "adapter_model.bin").exists():
        raise AdapterLoadError(f"{directory}: adapter_model.bin is a pickle and is refused; save it as safetensors")
    tensors = load_tensors(directory / PEFT_WEIGHTS)
    weight = tensors.get("prompt_embeddings")
    if weight is None or weight.dim() != 2:
        raise AdapterLoadError(f"{directory / PEFT_WEIGHTS}: expected a 2-D tensor 'prompt_embeddings', "
                               f"found {sorted(tensors)}")
    if weight.shape[1] != backbone.hidden_size:
        raise AdapterLoadError(f"{directory}: PEFT prompt has token_dim {weight.shape[1]} but backbone "
                               f"{backbone.spec!r} has hidden_size {backbone.hidden_size}")
    config = PromptTuningConfig(num_virtual_tokens=weight.shape[0], init="random")
    adapter = build_adapter(config, backbone)
    adapter.load_adapter_state_dict({"embeddings": weight.to(adapter.embeddings.dtype)}, str(directory / PEFT_WEIGHTS))
    return SoftPromptModel(backbone, adapter)
