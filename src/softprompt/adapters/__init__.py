"""Adapters, chosen by name: ``prompt_tuning``, ``prefix_tuning``, ``conditional_prompt``, ``lora``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def save_adapter(adapter: Adapter, directory: str | Path, backbone_model=None) -> Path:
    """Write ``softprompt_adapter.json`` and ``adapter.safetensors`` (each atomically); with
    ``backbone_model``, the transformer blocks trained in place on it too (``num_layers_unfrozen``):
    ``backbone_layers.safetensors``, their indices recorded in the JSON as ``backbone_layers``."""
    from ..modeling.backbones import layer_params, trained_layers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "adapter_type": adapter.config.adapter_type,
            "config": adapter.config.to_dict(), "backbone": adapter.backbone_info}
    layers = trained_layers(backbone_model) if backbone_model is not None else []
    # weights first: a reader that finds the JSON finds complete weights
    if layers:
        save_tensors(directory / LAYERS_FILE, {n: p.detach() for n, p in layer_params(backbone_model, layers).items()})
        meta["backbone_layers"] = {"file": LAYERS_FILE, "layers": layers}
    save_tensors(directory / WEIGHTS_FILE, adapter.adapter_state_dict(),
                 metadata={"adapter_type": adapter.config.adapter_type})
    write_json(directory / CONFIG_FILE, meta)
    return directory


def load_backbone_layers(directory: str | Path, backbone) -> list[int]:
    """Copy the transformer blocks an adapter directory carries (trained with the adapter) into
    ``backbone``, checked to fit it; their indices, [] when it carries none. Directories written
    before the blocks were saved here hold them in ``head.safetensors`` as ``backbone.<name>``."""
    from ..modeling.backbones import load_layer_weights

    directory = Path(directory)
    meta = read_adapter_meta(directory)
    record = meta.get("backbone_layers")
    if record:
        source = directory / LAYERS_FILE
        tensors = load_tensors(source)
    else:
        source = directory / "head.safetensors"
        saved = load_tensors(source) if source.exists() else {}
        tensors = {k[len("backbone."):].replace(".base_layer.", "."): v for k, v in saved.items()
                   if k.startswith("backbone.")}
    if not tensors:
        return []
    check_fits(meta, backbone, str(directory))
    layers = load_layer_weights(backbone.model, tensors, str(source))
    if record and layers != record.get("layers"):
        raise AdapterLoadError(f"{source}: holds transformer blocks {layers}, {directory / CONFIG_FILE} records "
                               f"{record.get('layers')}")
    return layers


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
    "load_backbone_layers", "make_config", "read_saved_adapter", "save_adapter",
]
