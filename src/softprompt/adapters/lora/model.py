from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn

from ...errors import ConfigError
from ..base import Adapter
from .config import LoRAConfig


class LoRA(Adapter):
    """LoRA layers injected into the backbone by PEFT; only their weights train and are saved.

    The backbone is changed in place, so one backbone carries at most one LoRA adapter.
    """

    config_class = LoRAConfig

    def __init__(self, config: LoRAConfig, backbone):
        super().__init__(config, backbone)
        from peft import LoraConfig, inject_adapter_in_model

        model = backbone.model
        if getattr(model, "_softprompt_lora", False):
            raise ConfigError("this backbone already carries a LoRA adapter; load a fresh backbone")
        targets = config.target_modules
        if targets == ["all-linear"]:
            targets = "all-linear"
        # GPT-2 keeps its projections in transformers' Conv1D, whose weight is stored transposed
        from transformers.pytorch_utils import Conv1D

        conv1d = any(isinstance(m, Conv1D) for m in model.modules())
        self.fan_in_fan_out = conv1d  # PEFT's flag for it (and for the PEFT export's config)
        peft_config = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=targets, fan_in_fan_out=conv1d)
        try:
            inject_adapter_in_model(peft_config, model, adapter_name="default")
        except ValueError as e:
            raise ConfigError(f"lora.target_modules={config.target_modules!r}: {e}") from None
        model._softprompt_lora = True
        # keep the backbone out of this module's children: only the LoRA weights belong to the adapter
        object.__setattr__(self, "_model", model)
        for name, p in self._named_lora():
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()  # trained weights stay fp32; PEFT runs them at the input's precision
            p.requires_grad_(True)

    def _named_lora(self):
        return [(n, p) for n, p in self._model.named_parameters() if "lora_" in n]

    def trainable_parameters(self):
        return [p for _, p in self._named_lora()]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self._named_lora()}

    def _assign(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self._named_lora():
                p.copy_(tensors[name])

    def disabled(self):
        """A context in which the backbone runs without the LoRA update (see :func:`lora_off`)."""
        return lora_off(self._model)


@contextlib.contextmanager
def lora_off(model: nn.Module):
    """Run ``model`` without PEFT's LoRA updates until the block ends; each LoRA layer's on/off
    state and its weights' ``requires_grad`` come back as they were (so blocks may nest)."""
    if "peft" in sys.modules:  # no LoRA layer can exist before PEFT is imported
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    else:
        layers = []
    was_off = [m.disable_adapters for m in layers]
    grads = [(p, p.requires_grad) for m in layers for name in m.adapter_layer_names
             for p in getattr(m, name).parameters()]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m, off in zip(layers, was_off):
            m.enable_adapters(not off)
        for p, grad in grads:
            p.requires_grad_(grad)
