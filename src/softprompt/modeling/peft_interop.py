"""softprompt adapters to and from PEFT's adapter format, for every adapter PEFT has.

PEFT stores an adapter as ``adapter_config.json`` + ``adapter_model.safetensors``;
``peft.PeftModel.from_pretrained(base, directory)`` loads what :func:`export_peft` writes, and
:func:`import_peft` reads what ``PeftModel.save_pretrained`` writes, with the same logits:

- prompt tuning (``PROMPT_TUNING``): one tensor ``prompt_embeddings`` (n, H). On unpadded (or
  right-padded) inputs PEFT gives our logits, since both put the virtual tokens right before the
  first real token there.
- prefix tuning (``PREFIX_TUNING``): ``prompt_embeddings`` (n, layers * 2 * kv_heads * head_dim),
  each row the n-th position's key and value of every layer (layer i's key at 2i, its value at
  2i + 1), as the cache holds them. A reparameterised prefix is exported as the prefix its MLP
  produces (PEFT's inference layout, ``prefix_projection`` off).
- LoRA (``LORA``): PEFT's own ``LoraConfig`` and its tensor names
  (``base_model.model.<module>.lora_A.weight``).

A conditional prompt has no PEFT counterpart and is refused, as are trained transformer blocks
(``num_layers_unfrozen``), which a PEFT adapter would drop. :func:`merge_lora` writes a LoRA model
as one standalone transformers folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..adapters import LoRAConfig, PrefixTuningConfig, PromptTuningConfig, build_adapter
from ..errors import AdapterLoadError
from ..storage import load_tensors, read_json, save_tensors, write_json
from .backbones import trained_layers
from .model import SoftPromptModel

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_TYPES = {"prompt_tuning": "PROMPT_TUNING", "prefix_tuning": "PREFIX_TUNING", "lora": "LORA"}


def _task_type(backbone) -> str:
    return "CAUSAL_LM" if backbone.is_causal else "FEATURE_EXTRACTION"


def export_peft(model, directory: str | Path) -> Path:
    """Write ``model``'s adapter (prompt tuning, prefix tuning or LoRA) in PEFT's format."""
    adapter = model.adapter
    kind = adapter.config.adapter_type if adapter is not None else "no adapter"
    if kind not in PEFT_TYPES:
        raise AdapterLoadError(f"PEFT export supports {', '.join(PEFT_TYPES)} adapters; this model has {kind}"
                               + (" (PEFT has no conditional prompt)" if kind == "conditional_prompt" else ""))
    if layers := trained_layers(model.model):
        raise AdapterLoadError(f"PEFT export writes the adapter alone; this model also trained transformer blocks "
                               f"{layers} (num_layers_unfrozen), which the export would drop")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    {"prompt_tuning": _export_prompt, "prefix_tuning": _export_prefix, "lora": _export_lora}[kind](model, directory)
    return directory


def _export_prompt(model, directory: Path) -> None:
    adapter, backbone = model.adapter, model.backbone
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


def _export_prefix(model, directory: Path) -> None:
    from peft import PrefixTuningConfig as PeftPrefixConfig

    adapter, backbone = model.adapter, model.backbone
    layers, _, heads, n, dim = adapter.shape
    with torch.no_grad():  # (layers, 2, heads, n, dim) -> (n, layers * 2 * heads * dim): PEFT's row per position
        weight = adapter._prefix().detach().float().permute(3, 0, 1, 2, 4).reshape(n, -1).contiguous()
    save_tensors(directory / PEFT_WEIGHTS, {"prompt_embeddings": weight}, metadata={"format": "pt"})
    PeftPrefixConfig(task_type=_task_type(backbone), num_virtual_tokens=n, num_layers=layers,
                     token_dim=heads * dim, num_attention_heads=heads, prefix_projection=False,
                     inference_mode=True, base_model_name_or_path=backbone.path).save_pretrained(str(directory))


def _export_lora(model, directory: Path) -> None:
    from peft import LoraConfig

    adapter, backbone = model.adapter, model.backbone
    cfg = adapter.config
    tensors = {f"base_model.model.{name.replace('.default.', '.')}": t.float().contiguous()
               for name, t in adapter.adapter_state_dict().items()}
    save_tensors(directory / PEFT_WEIGHTS, tensors, metadata={"format": "pt"})
    targets = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    LoraConfig(task_type=_task_type(backbone), r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
               target_modules=targets, fan_in_fan_out=adapter.fan_in_fan_out, inference_mode=True,
               base_model_name_or_path=backbone.path).save_pretrained(str(directory))


def import_peft(directory: str | Path, backbone):
    """Load a PEFT adapter (prompt tuning, prefix tuning or LoRA) onto ``backbone``; returns a
    SoftPromptModel. What softprompt cannot reproduce exactly (DoRA, rsLoRA, per-module ranks,
    bias training, modules_to_save) is refused with the key that asks for it."""
    directory = Path(directory)
    meta = read_json(directory / PEFT_CONFIG, "PEFT adapter config")
    kind = meta.get("peft_type")
    readers = {"PROMPT_TUNING": _import_prompt, "PREFIX_TUNING": _import_prefix, "LORA": _import_lora}
    if kind not in readers:
        raise AdapterLoadError(f"{directory / PEFT_CONFIG}: peft_type is {kind!r}; softprompt imports "
                               f"{', '.join(readers)}")
    if meta.get("num_transformer_submodules", 1) not in (1, None):
        raise AdapterLoadError(f"{directory / PEFT_CONFIG}: num_transformer_submodules must be 1 (decoder or encoder)")
    if not (directory / PEFT_WEIGHTS).exists() and (directory / "adapter_model.bin").exists():
        raise AdapterLoadError(f"{directory}: adapter_model.bin is a pickle and is refused; save it as safetensors")
    return readers[kind](directory, meta, load_tensors(directory / PEFT_WEIGHTS), backbone)


def _prompt_tensor(directory: Path, tensors: dict, width: int, what: str) -> torch.Tensor:
    weight = tensors.get("prompt_embeddings")
    if weight is None or weight.dim() != 2:
        raise AdapterLoadError(f"{directory / PEFT_WEIGHTS}: expected a 2-D tensor 'prompt_embeddings', "
                               f"found {sorted(tensors)}")
    if weight.shape[1] != width:
        raise AdapterLoadError(f"{directory}: the PEFT {what} has rows of {weight.shape[1]} values, this backbone "
                               f"needs {width}")
    return weight


def _import_prompt(directory: Path, meta: dict, tensors: dict, backbone):
    weight = _prompt_tensor(directory, tensors, backbone.hidden_size, "prompt (token_dim = hidden_size)")
    config = PromptTuningConfig(num_virtual_tokens=weight.shape[0], init="random")
    adapter = build_adapter(config, backbone)
    adapter.load_adapter_state_dict({"embeddings": weight.to(adapter.embeddings.dtype)}, str(directory / PEFT_WEIGHTS))
    return SoftPromptModel(backbone, adapter)


def _import_prefix(directory: Path, meta: dict, tensors: dict, backbone):
    n = tensors["prompt_embeddings"].shape[0] if "prompt_embeddings" in tensors else 0
    config = PrefixTuningConfig(num_virtual_tokens=max(n, 1), init="random")
    adapter = build_adapter(config, backbone)
    layers, _, heads, n, dim = adapter.shape
    weight = _prompt_tensor(directory, tensors, layers * 2 * heads * dim,
                            f"prefix (layers {layers} x 2 x kv heads {heads} x head_dim {dim})")
    prefix = weight.float().reshape(n, layers, 2, heads, dim).permute(1, 2, 3, 0, 4).contiguous()
    adapter.load_adapter_state_dict({"prefix": prefix}, str(directory / PEFT_WEIGHTS))
    return SoftPromptModel(backbone, adapter)


_LORA_UNSUPPORTED = {"use_dora": False, "use_rslora": False, "bias": "none", "rank_pattern": {}, "alpha_pattern": {},
                     "modules_to_save": None, "layers_to_transform": None}


def _import_lora(directory: Path, meta: dict, tensors: dict, backbone):
    for key, plain in _LORA_UNSUPPORTED.items():
        if meta.get(key) not in (plain, None) and not (plain == {} and not meta.get(key)):
            raise AdapterLoadError(f"{directory / PEFT_CONFIG}: {key}={meta[key]!r} is not supported by softprompt's "
                                   f"LoRA (expected {plain!r})")
    targets = meta.get("target_modules")
    targets = ["all-linear"] if targets == "all-linear" else sorted(targets) if targets else None
    config = LoRAConfig(r=int(meta["r"]), alpha=meta.get("lora_alpha", 8), dropout=meta.get("lora_dropout", 0.0),
                        target_modules=targets)
    adapter = build_adapter(config, backbone)
    renamed = {}
    for name, t in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.(lora_[AB])\.weight", name)
        if m is None:
            raise AdapterLoadError(f"{directory / PEFT_WEIGHTS}: tensor {name!r} is not a LoRA A/B weight "
                                   "(base_model.model.<module>.lora_A.weight)")
        renamed[f"{m.group(1)}.{m.group(2)}.default.weight"] = t.float()
    adapter.load_adapter_state_dict(renamed, str(directory / PEFT_WEIGHTS))
    return SoftPromptModel(backbone, adapter)


def merge_lora(model, directory: str | Path) -> Path:
    """Write a LoRA ``model`` as one standalone transformers model folder with its tokenizer: each
    LoRA layer's update merged into its weight by PEFT (``W + (alpha / r) B A``) and the layer
    replaced by the merged base layer, as ``merge_and_unload`` does. ``model`` is left as it was
    (the merge runs on a copy); ``AutoModelForCausalLM.from_pretrained`` or a server loads the folder."""
    import copy

    from peft.tuners.tuners_utils import BaseTunerLayer

    if model.adapter is None or model.adapter.config.adapter_type != "lora":
        kind = model.adapter.config.adapter_type if model.adapter is not None else "no adapter"
        raise AdapterLoadError(f"merging folds a LoRA update into the weights; this model has {kind}")
    if layers := trained_layers(model.model):
        raise AdapterLoadError(f"this model also trained transformer blocks {layers} (num_layers_unfrozen); "
                               "merging LoRA alone would drop them")
    merged = copy.deepcopy(model.model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent) if parent else merged, child, module.get_base_layer())
    if hasattr(merged, "_softprompt_lora"):
        del merged._softprompt_lora
    directory = Path(directory)
    merged.save_pretrained(str(directory))
    model.tokenizer.save_pretrained(str(directory))
    return directory
