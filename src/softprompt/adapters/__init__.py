"""Adapters, chosen by name: ``prompt_tuning``, ``prefix_tuning``, ``conditional_prompt``, ``lora``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config.registry import Registry
from ..errors import AdapterLoadError, ConfigError
from ..storage import load_tensors, read_json, save_tensors, write_json
from .base import Adapter, AdapterConfig
from .conditional import ConditionalPrompt, ConditionalPromptConfig
from .lora import LoRA, LoRAConfig
from .prefix_tuning import PrefixTuning, PrefixTuningConfig
from .prompt_tuning import PromptTuning, PromptTuningConfig

ADAPTERS: Registry[type[Adapter]] = Registry("adapter")
for _cls in (PromptTuning, PrefixTuning, ConditionalPrompt, LoRA):
    ADAPTERS.register(_cls.config_class.adapter_type)(_cls)

CONFIG_FILE = "softprompt_adapter.json"
WEIGHTS_FILE = "adapter.safetensors"
LAYERS_FILE = "backbone_layers.safetensors"  # transformer blocks trained with the adapter, if any
FORMAT_VERSION = 1


def make_config(adapter_type: str, options: dict[str, Any] | None = None) -> AdapterConfig:
    return ADAPTERS.get(adapter_type).config_class.from_dict(dict(options or {}))


def build_adapter(config: AdapterConfig, backbone) -> Adapter:
    adapter = ADAPTERS.get(config.adapter_type)(config, backbone)
    return adapter.to(backbone.model.device)


def save_adapter(adapter: Adapter, directory: str | Path,
                 backbone_layers: tuple[list[int], dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``softprompt_adapter.json`` and ``adapter.safetensors`` (each atomically); with
    ``backbone_layers`` = (block indices, their tensors by name), the transformer blocks trained in
    place with the adapter too (``num_layers_unfrozen``): ``backbone_layers.safetensors``, their
    indices recorded in the JSON as ``backbone_layers``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "adapter_type": adapter.config.adapter_type,
            "config": adapter.config.to_dict(), "backbone": adapter.backbone_info}
    # weights first: a reader that finds the JSON finds complete weights
    if backbone_layers and backbone_layers[0]:
        layers, tensors = backbone_layers
        save_tensors(directory / LAYERS_FILE, {n: t.detach() for n, t in tensors.items()})
        meta["backbone_layers"] = {"file": LAYERS_FILE, "layers": list(layers)}
    save_tensors(directory / WEIGHTS_FILE, adapter.adapter_state_dict(),
                 metadata={"adapter_type": adapter.config.adapter_type})
    write_json(directory / CONFIG_FILE, meta)
    return directory


def read_backbone_layers(directory: str | Path) -> tuple[list[int] | None, dict[str, torch.Tensor], Path]:
    """(the block indices the JSON records, or None; the blocks' tensors by name; the file read) of
    the transformer blocks an adapter directory carries ({} when none). Directories written before
    the blocks were saved here hold them in ``head.safetensors`` as ``backbone.<name>``."""
    directory = Path(directory)
    record = read_adapter_meta(directory).get("backbone_layers")
    if record:
        return record.get("layers"), load_tensors(directory / LAYERS_FILE), directory / LAYERS_FILE
    source = directory / "head.safetensors"
    saved = load_tensors(source) if source.exists() else {}
    return None, {k[len("backbone."):].replace(".base_layer.", "."): v for k, v in saved.items()
                  if k.startswith("backbone.")}, source


def read_adapter_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterLoadError(f"adapter directory {directory} does not exist")
    meta = read_json(directory / CONFIG_FILE, "adapter config")
    for key in ("adapter_type", "config", "backbone"):
        if key not in meta:
            raise AdapterLoadError(f"{directory / CONFIG_FILE}: missing key {key!r}")
    return meta


def check_fits(meta: dict, backbone, source: str) -> None:
    """Refuse an adapter saved for a backbone of another shape, naming both sizes."""
    saved, now = meta["backbone"], backbone.describe()
    for key in ("hidden_size", "num_layers", "num_kv_heads", "head_dim"):
        if key in saved and saved[key] != now[key]:
            raise AdapterLoadError(
                f"{source}: adapter was saved for {key}={saved[key]} ({saved.get('spec')}) "
                f"but backbone {now['spec']!r} has {key}={now[key]}"
            )


def read_saved_adapter(directory: str | Path, backbone) -> tuple[dict, dict[str, Any]]:
    """(meta, weights) of the adapter directory, checked to fit ``backbone``; builds no adapter
    (a LoRA one would be a second LoRA on the backbone)."""
    directory = Path(directory)
    meta = read_adapter_meta(directory)
    check_fits(meta, backbone, str(directory))
    return meta, load_tensors(directory / WEIGHTS_FILE)


def load_adapter(directory: str | Path, backbone) -> Adapter:
    directory = Path(directory)
    meta, tensors = read_saved_adapter(directory, backbone)
    try:
        config = make_config(meta["adapter_type"], meta["config"])
    except ConfigError as e:
        raise AdapterLoadError(f"{directory / CONFIG_FILE}: {e}") from None
    adapter = build_adapter(_no_init(config), backbone)
    adapter.config = config
    adapter.load_adapter_state_dict(tensors, source=str(directory / WEIGHTS_FILE))
    return adapter


def _no_init(config: AdapterConfig) -> AdapterConfig:
    """Loading overwrites the init, so skip costly inits (prefix K/V from text)."""
    if hasattr(config, "init") and not getattr(config, "reparameterize", False):
        options = config.to_dict()
        options["init"] = "random"
        return type(config).from_dict(options)
    return config


__all__ = [
    "ADAPTERS", "Adapter", "AdapterConfig", "ConditionalPrompt", "ConditionalPromptConfig", "LoRA", "LoRAConfig",
    "PrefixTuning", "PrefixTuningConfig", "PromptTuning", "PromptTuningConfig", "build_adapter", "load_adapter",
    "read_backbone_layers", "make_config", "read_saved_adapter", "save_adapter",
]
