"""Precision: which dtype the frozen backbone runs in, and what the machine supports.

``model.dtype`` is ``float32``, ``bfloat16``, ``float16`` or ``auto``; :func:`resolve_dtype` turns
it into a torch dtype for the device the policy runs on. ``auto`` is bf16 on a CUDA GPU that
supports it, and on a CPU with native bf16 arithmetic (AMX, or AVX512-BF16); fp32 otherwise: on
a CPU without those instructions bf16 is emulated, correct but slower than fp32.

Only the frozen backbone (and the frozen models a run loads beside it) takes that dtype. Every
trainable parameter (adapter, LoRA weights, value head, classifier head, unfrozen blocks) and
the optimizer's state stay fp32; the backbone's forward passes run under :func:`autocast`, so
an fp32 weight inside them (LoRA, unfrozen blocks) is used at the backbone's precision while its
gradient and update stay fp32. See docs/design.md, "Precision".

:func:`cpu_features` is public: the benchmarks record it with their results.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..errors import ConfigError

#: ``model.dtype`` names and the dtypes they select (``auto`` is resolved per device)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = (*DTYPES, "auto")

#: /proc/cpuinfo flags that matter for low-precision arithmetic on a CPU
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo_flags(text: str) -> set[str]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86: flags; ARM: Features
            return set(value.split())
    return set()


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """What this CPU offers: ``{"flags": {flag: bool for CPU_FLAGS}, "capability": torch's kernel
    level (``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512, ...), "bf16_native":
    AMX-BF16 or AVX512-BF16 present, "model": the CPU's name}``. Without /proc/cpuinfo (macOS,
    Windows) every flag is False."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    flags = _cpuinfo_flags(text)
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.split(":", 1)[0].strip() == "model name"), None)
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    capability = get() if get is not None else None
    has = {f: f in flags for f in CPU_FLAGS}
    return {"flags": has, "capability": capability, "model": name,
            "bf16_native": has["avx512_bf16"] or (has["amx_bf16"] and has["amx_tile"])}


def bf16_fast(device: torch.device | str, features: dict | None = None) -> bool:
    """Whether ``device`` computes in bf16 natively (so ``auto`` picks it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool((features or cpu_features())["bf16_native"])
    return False


def resolve_dtype(name: str | torch.dtype, device: torch.device | str = "cpu", features: dict | None = None
                  ) -> torch.dtype:
    """The torch dtype ``model.dtype`` = ``name`` selects on ``device`` (``auto``: bf16 where the
    device computes it natively, see :func:`bf16_fast`, else fp32)."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ConfigError(f"config key 'model.dtype'={name}: expected one of {', '.join(DTYPE_NAMES)}")
        return name
    if name == "auto":
        return torch.bfloat16 if bf16_fast(device, features) else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"config key 'model.dtype'={name!r}: expected one of {', '.join(DTYPE_NAMES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'``."""
    return str(dtype).removeprefix("torch.")


def autocast(dtype: torch.dtype, device: torch.device | str):
    """The autocast context for a backbone computing in ``dtype`` on ``device``: fp32 weights met
    inside it (LoRA, unfrozen blocks) are used in ``dtype``; nothing at all for fp32."""
    device = torch.device(device)
    if dtype == torch.float32 or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def backbone_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a backbone computes in: its input embeddings' (the blocks it trains in place,
    the LoRA weights in it, are upcast to fp32 and do not change it)."""
    return model.get_input_embeddings().weight.dtype


def upcast_(params) -> None:
    """Trainable parameters in fp32 (in place, the same Parameter objects): what a low-precision
    backbone's unfrozen blocks or LoRA weights become before an optimizer sees them."""
    for p in params:
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def default_device() -> torch.device:
    """Where a model goes when nothing says otherwise: the current CUDA device when there is one,
    else the CPU. (A training process uses accelerate's per-process device instead.)"""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
