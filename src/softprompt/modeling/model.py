"""SoftPromptModel: a frozen backbone plus one adapter, with the placement of docs/design.md."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..adapters import (
    Adapter,
    AdapterConfig,
    PromptTuning,
    build_adapter,
    check_fits,
    load_adapter,
    read_adapter_meta,
    read_backbone_layers,
    save_adapter,
)
from ..errors import AdapterLoadError, ConfigError
from ..hf_compat import cache_kwarg, cache_name, output_cache
from .backbones import (
    Backbone,
    is_hub_id,
    layer_params,
    load_backbone,
    load_layer_weights,
    trained_layers,
)
from .backbones import untouched as untouched_backbone
from .families import check_positions, check_prefix_window, sliding_window
from .generation import check_messages, generate, parts_text, policy_entropy, policy_logprobs
from .hub import HUB, hub_snapshot, prepare_upload, push_folder, split_revision
from .placement import insert_virtual, position_ids
from .precision import autocast, backbone_dtype


@dataclass
class SoftPromptOutput:
    logits: torch.Tensor | None  # (B, k, V), aligned with the last k input tokens
    hidden: torch.Tensor | None = None  # (B, k, H) last hidden state, same alignment
    cache: object | None = None  # the KV cache, with use_cache


PACKAGED = "packaged:"


def packaged_runs() -> list[str]:
    from importlib import resources

    root = resources.files("softprompt").joinpath("data")
    return sorted(p.name for p in root.iterdir() if p.joinpath("softprompt_adapter.json").is_file())


def resolve_run_path(path: str | Path, revision: str | None = None) -> Path:
    """``packaged:NAME`` (an adapter shipped inside softprompt, e.g. the SST-2 judge),
    ``hub:user/repo[@revision]`` (a Hub repo, through the Hugging Face cache: ``modeling/hub.py``),
    a plain ``user/repo`` that is no local path (the same), or a path."""
    if isinstance(path, str) and path.startswith(HUB):
        return hub_snapshot(path[len(HUB):], revision)
    if isinstance(path, str) and not Path(path).exists() and path.count("/") == 1 and \
            is_hub_id(split_revision(path)[0]) and not path.startswith((".", "/")):
        try:
            return hub_snapshot(path, revision)
        except AdapterLoadError as e:
            raise AdapterLoadError(f"{path} is no local folder; as a Hub repo: {e}") from None
    if isinstance(path, str) and path.startswith(PACKAGED):
        from importlib import resources

        name = path[len(PACKAGED):]
        if name not in packaged_runs():
            raise AdapterLoadError(f"no packaged adapter {name!r}; packaged: {', '.join(packaged_runs())}")
        return Path(str(resources.files("softprompt").joinpath("data", name)))
    return Path(path)


def resolve_adapter_dir(path: str | Path, revision: str | None = None) -> Path:
    """An adapter directory, or a run folder whose best (else last) checkpoint holds one (local, or
    on the Hub: see :func:`resolve_run_path`)."""
    path = resolve_run_path(path, revision)
    for candidate in (path, path / "checkpoints" / "best", path / "checkpoints" / "last"):
        if (candidate / "softprompt_adapter.json").exists():
            return candidate
    if (path / "adapter_config.json").exists():
        raise AdapterLoadError(f"{path} is a PEFT adapter; load it with softprompt.peft_interop.import_peft")
    raise AdapterLoadError(f"{path} holds no softprompt adapter (softprompt_adapter.json) nor a run's checkpoint")


def save_adapter_and_blocks(adapter: Adapter, directory: str | Path, backbone_model: nn.Module) -> Path:
    """:func:`softprompt.adapters.save_adapter`, with the transformer blocks trained in place on
    ``backbone_model`` (``num_layers_unfrozen``), if any: they are part of the trained model."""
    layers = trained_layers(backbone_model)
    return save_adapter(adapter, directory, (layers, layer_params(backbone_model, layers)) if layers else None)


def load_backbone_layers(directory: str | Path, backbone: Backbone) -> list[int]:
    """Copy the transformer blocks an adapter directory carries into ``backbone``, checked to fit
    it; their indices, [] when it carries none."""
    recorded, tensors, source = read_backbone_layers(directory)
    if not tensors:
        return []
    check_fits(read_adapter_meta(directory), backbone, str(directory))
    layers = load_layer_weights(backbone.model, tensors, str(source))
    if recorded is not None and layers != recorded:
        raise AdapterLoadError(f"{source}: holds transformer blocks {layers}, its adapter's JSON records {recorded}")
    return layers


def _autocast(method):
    """Run a SoftPromptModel method under the backbone's autocast (see :meth:`SoftPromptModel.autocast`)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.autocast():
            return method(self, *args, **kwargs)
    return run


class SoftPromptModel(nn.Module):
    """A frozen backbone with a trainable adapter (or none: the untouched base model).

    The backbone computes in its own dtype (``model.dtype``), the adapter's weights are fp32:
    virtual tokens and prefix keys/values are cast to the backbone's dtype where they enter it
    (the gradient flows back through the cast), and every backbone pass runs under
    :meth:`autocast`, so fp32 weights inside the backbone (LoRA, unfrozen blocks) compute at its
    precision. In fp32 none of this changes a number.
    """

    def __init__(self, backbone: Backbone, adapter: Adapter | None = None):
        super().__init__()
        self.backbone = backbone
        self.model = backbone.model
        self.adapter = adapter
        self.share_prompt = True  # see shares_prompt_cache()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: Backbone | str, config: AdapterConfig | None = None) -> SoftPromptModel:
        if isinstance(backbone, str):
            backbone = load_backbone(backbone)
        return cls(backbone, build_adapter(config, backbone) if config is not None else None)

    @classmethod
    def from_pretrained(cls, path: str | Path, backbone: Backbone | str | None = None, revision: str | None = None,
                        **load_kw) -> SoftPromptModel:
        """Load an adapter directory or a run folder, or a Hub repo (``"user/repo"``,
        ``"hub:user/repo@rev"``, or ``revision=``: through the Hugging Face cache, ``HF_HUB_OFFLINE``
        honoured); the backbone recorded in it unless one is given.

        Transformer blocks trained with the adapter (``num_layers_unfrozen``) are copied into the
        backbone, as LoRA changes it in place; :meth:`untouched` still runs the loaded backbone.
        """
        directory = resolve_adapter_dir(path, revision)
        meta = read_adapter_meta(directory)
        if backbone is None:
            backbone = meta["backbone"]["spec"]
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, kind=meta["backbone"].get("kind"), **load_kw)
        model = cls(backbone, load_adapter(directory, backbone))
        load_backbone_layers(directory, backbone)
        return model

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    revision: str | None = None, commit_message: str = "Upload softprompt adapter") -> str:
        """Upload the adapter (and the blocks trained with it) to Hub repo ``repo_id`` with a model card
        (``modeling/hub.py``); created if needed. Returns the commit's URL. For a whole run (its
        config, metrics and head too): ``softprompt push RUN_DIR REPO_ID``."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folder = prepare_upload(self.save_pretrained(Path(tmp) / "adapter"), Path(tmp) / "upload", repo_id)
            return push_folder(folder, repo_id, private=private, token=token, revision=revision,
                               commit_message=commit_message)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the adapter, and the backbone blocks trained with it if any (see save_adapter_and_blocks)."""
        if self.adapter is None:
            raise AdapterLoadError("this model has no adapter to save")
        return save_adapter_and_blocks(self.adapter, directory, self.model)

    @contextlib.contextmanager
    def untouched(self):
        """The base model until the block ends: no adapter, and the backbone as it was loaded
        (LoRA layers off, blocks trained in place back at their loaded weights: see
        :func:`softprompt.backbones.untouched`); all restored after."""
        adapter, self.adapter = self.adapter, None
        try:
            with untouched_backbone(self.model):
                yield self
        finally:
            self.adapter = adapter

    # -- properties ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the backbone computes in (``model.dtype`` as loaded)."""
        return backbone_dtype(self.model)

    def autocast(self):
        """The context every backbone pass runs in: torch.autocast at :attr:`compute_dtype` on
        the backbone's device, nothing in fp32 (see :func:`softprompt.modeling.precision.autocast`)."""
        return autocast(self.compute_dtype, self.device)

    @property
    def num_sequence_tokens(self) -> int:
        return self.adapter.num_sequence_tokens if self.adapter is not None else 0

    @property
    def num_prefix_tokens(self) -> int:
        return self.adapter.num_prefix_tokens if self.adapter is not None else 0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.adapter.trainable_parameters() if self.adapter is not None else []

    # -- placement -----------------------------------------------------------------------------
    def prefix_key_values(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The adapter's per-layer prefix keys/values for ``batch_size`` rows in the backbone's dtype
        (the adapter holds them in fp32), or None."""
        kv = self.adapter.prefix_key_values(batch_size) if self.adapter is not None else None
        if kv is None:
            return None
        dtype = self.compute_dtype
        return [(k.to(dtype), v.to(dtype)) for k, v in kv]

    def prefix_cache(self, batch_size: int):
        """A fresh DynamicCache holding the adapter's prefix keys/values (or None)."""
        kv = self.prefix_key_values(batch_size)
        if kv is None:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(kv):
            cache.update(k, v, layer)
        return cache

    def shares_prompt_cache(self, length: int | None = None) -> bool:
        """True when every row sees the same virtual tokens in a causal LM.

        Their keys/values then do not depend on the text after them, so they are computed
        once (batch 1) and repeated in the KV cache instead of recomputed per row: the
        same numbers as in-sequence placement at a fraction of the cost. The shared cache puts
        the left pads between the virtual tokens and the text, so on a model with sliding-window
        layers it is used only while the whole layout (virtual tokens + ``length`` positions, None:
        unknown) fits in the window, where those pads change nothing.
        """
        adapter = self.adapter
        shared = (self.share_prompt and self.backbone.is_causal and isinstance(adapter, PromptTuning)
                  and not (adapter.training and adapter.config.dropout > 0))
        window = sliding_window(self.model.config) if shared else None
        return shared and (window is None or (length is not None and self.num_sequence_tokens + length <= window))

    @_autocast
    def prompt_cache(self, batch_size: int, cache=None):
        """Append the virtual tokens' per-layer K/V (computed once) for ``batch_size`` rows to ``cache``."""
        from transformers import DynamicCache

        prompt = self.adapter.embeddings.unsqueeze(0).to(self.compute_dtype)
        n = prompt.shape[1]
        alone = DynamicCache(config=self.model.config)
        positions = torch.arange(n, device=prompt.device).unsqueeze(0)
        self.model.base_model(inputs_embeds=prompt, position_ids=positions, use_cache=True,
                              **cache_kwarg(self.model.base_model, alone))
        cache = cache if cache is not None else DynamicCache(config=self.model.config)
        for i, layer in enumerate(alone.layers):
            cache.update(layer.keys.expand(batch_size, -1, -1, -1), layer.values.expand(batch_size, -1, -1, -1), i)
        return cache

    def shared_context(self, batch_size: int, cache=None, share_prompt: bool = False) -> tuple[object, int]:
        """The KV cache of what every row sees before its own tokens, and its length.

        That is the adapter's prefix (added unless ``cache`` is given, e.g. prefilled by
        generation) or, with ``share_prompt``, the virtual tokens computed once.
        """
        n_cached = self.num_prefix_tokens
        if n_cached and cache is None:
            cache = self.prefix_cache(batch_size)
        if share_prompt:
            return self.prompt_cache(batch_size, cache), self.num_sequence_tokens
        return cache, n_cached

    def model_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        cache=None,
        prompt: torch.Tensor | None = None,
        extra_positions: int = 0,
    ) -> dict:
        """Backbone keyword arguments that realise the placement for a (left-padded) batch.

        ``prompt`` (B, m, H) replaces the adapter's virtual tokens for this call (a mutated
        or dropped-out view of them, e.g. for contrastive losses); m may differ from n.
        ``extra_positions``: how many positions will follow in the same cache (generated or
        grouped completion tokens), for the checks of :mod:`softprompt.modeling.families`.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(input_ids.device).long()
        batch, length = input_ids.shape[0], input_ids.shape[1] + extra_positions
        virtual = self.num_prefix_tokens + (prompt.shape[1] if prompt is not None else self.num_sequence_tokens)
        check_positions(self.backbone.position_limit, self.backbone.spec, virtual + length, virtual)
        if self.num_prefix_tokens and self.backbone.is_causal:
            check_prefix_window(self.model.config, self.backbone.spec, self.num_prefix_tokens, length)
        embeds = self.model.get_input_embeddings()(input_ids)
        seq_mask = attention_mask
        shared = prompt is None and self.shares_prompt_cache(length)
        cache, n_cached = self.shared_context(batch, cache, shared)
        if prompt is None and not shared and self.num_sequence_tokens:
            prompt = self.adapter.prompt_embeddings(batch, condition)
        if prompt is not None:
            embeds, seq_mask = insert_virtual(embeds, attention_mask, prompt)
        offset = n_cached if self.backbone.is_causal else 0
        full_mask = torch.cat([seq_mask.new_ones(batch, n_cached), seq_mask], 1) if n_cached else seq_mask
        return {
            "inputs_embeds": embeds,
            "attention_mask": full_mask,
            "position_ids": position_ids(seq_mask, offset),
            cache_name(self.model): cache,  # the KV cache (its keyword depends on the transformers version)
        }

    # -- forward -------------------------------------------------------------------------------
    @_autocast
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_hidden: bool = False,
        use_cache: bool = False,
        prompt: torch.Tensor | None = None,
    ) -> SoftPromptOutput:
        """Logits (and optionally last hidden states) for the last ``logits_to_keep`` input tokens (0: all).

        Virtual positions are dropped, so output column j belongs to input token j.
        """
        if not self.backbone.is_causal:
            raise ConfigError(f"{self.backbone.spec!r} is an encoder: use encode(), not forward()")
        keep = logits_to_keep or input_ids.shape[1]
        kwargs = self.model_inputs(input_ids, attention_mask, condition, prompt=prompt)
        out = self.model(**kwargs, use_cache=use_cache, logits_to_keep=keep, output_hidden_states=return_hidden)
        hidden = out.hidden_states[-1][:, -keep:] if return_hidden else None
        return SoftPromptOutput(out.logits, hidden, output_cache(out) if use_cache else None)

    @_autocast
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states over the full layout and a mask that is 1 on real tokens only.

        Works for encoders and for causal LMs (through their base model, no LM head).
        Virtual tokens are in the hidden states but masked out, so pooling sees the text.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = self.model_inputs(input_ids, attention_mask, condition, prompt=prompt)
        body = self.model if not self.backbone.is_causal else self.model.base_model
        hidden = body(**kwargs, use_cache=False).last_hidden_state
        n_seq = hidden.shape[1] - input_ids.shape[1]
        real = attention_mask.to(hidden.device).long()
        if n_seq:  # place zeros where the virtual tokens sit
            zeros = real.new_zeros(real.shape[0], n_seq, 1)
            real = insert_virtual(real.unsqueeze(-1), attention_mask.to(hidden.device).long(), zeros)[0].squeeze(-1)
        return hidden, real

    def last_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden state (after the final norm) at each row's last position: (B, H).

        With left padding the last column is every row's last real token. A padded batch
        whose cached part (shared prompt, prefix, or none) is the same for every row runs
        padding-free: see :meth:`_packed_last_hidden`.
        """
        if attention_mask is not None and prompt is None and self._can_pack(attention_mask):
            return self._packed_last_hidden(input_ids, attention_mask)
        hidden, _ = self.encode(input_ids, attention_mask, condition, prompt)
        return hidden[:, -1]

    #: pack a batch when at least this fraction of it is padding ...
    PACK_MIN_PADDING = 0.2
    #: ... and it holds at most this many real tokens (attention over the packed row is quadratic)
    PACK_MAX_TOKENS = 768

    def _can_pack(self, mask: torch.Tensor) -> bool:
        if not self.backbone.is_causal or mask.shape[0] < 2:
            return False
        if self.num_sequence_tokens and not self.shares_prompt_cache(mask.shape[1]):
            return False  # per-row virtual tokens in the sequence
        window = sliding_window(self.model.config)
        if window is not None and self.num_sequence_tokens + self.num_prefix_tokens + mask.shape[1] > window:
            return False  # the packed row's block mask knows no window
        real = int(mask.sum())
        return real <= self.PACK_MAX_TOKENS and 1 - real / mask.numel() >= self.PACK_MIN_PADDING

    @_autocast
    def _packed_last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Padding-free forward: all rows' real tokens in one row, attention block-diagonal.

        Each token attends to the cached part (shared prompt or prefix, computed for one row)
        and to earlier tokens of its own row, at the positions it has unpacked, so the result
        equals the padded forward while no compute goes to pads.
        """
        mask = attention_mask.to(input_ids.device).bool()
        batch, length = input_ids.shape
        cache, n_cached = self.shared_context(1, share_prompt=self.shares_prompt_cache(attention_mask.shape[1]))
        tokens = input_ids[mask].unsqueeze(0)  # (1, T), rows one after another
        row = torch.arange(batch, device=mask.device).unsqueeze(1).expand(batch, length)[mask]
        positions = (mask.long().cumsum(1) - 1)[mask] + n_cached
        t = tokens.shape[1]
        order = torch.arange(t, device=mask.device)
        own = (row.unsqueeze(1) == row.unsqueeze(0)) & (order.unsqueeze(0) <= order.unsqueeze(1))
        allowed = torch.cat([own.new_ones(t, n_cached), own], 1)[None, None]  # (1, 1, T, n+T)
        hidden = self.model.base_model(inputs_embeds=self.model.get_input_embeddings()(tokens),
                                       attention_mask=allowed, position_ids=positions.unsqueeze(0),
                                       use_cache=False, **cache_kwarg(self.model.base_model, cache)
                                       ).last_hidden_state[0]
        return hidden[mask.sum(1).cumsum(0) - 1]

    def sequence_logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float = 1.0,
        condition: torch.Tensor | None = None,
        return_hidden: bool = False,
        top_k: int = 0,
        top_p: float = 1.0,
        return_entropy: bool = False,
    ):
        """Teacher-forced log-probs (B, T) of right-padded completions after left-padded prompts.

        Under the sampling policy of :func:`softprompt.generation.policy_scores`: softmax(logits /
        ``temperature``), truncated to the ``top_k`` / ``top_p`` set of the teacher-forced logits
        and renormalised when those are set (each completion token kept in its set), so they
        equal what generation stored with the same settings. Entries where ``completion_mask``
        is 0 are set to 0. ``return_hidden`` adds the hidden states that predict each token,
        ``return_entropy`` the policy's entropy (B, T) at each (see :func:`_with_extras`).
        """
        ids = torch.cat([prompt_ids, completion_ids], 1)
        mask = torch.cat([prompt_mask, completion_mask], 1)
        t = completion_ids.shape[1]
        out = self.forward(ids, mask, condition, logits_to_keep=t + 1, return_hidden=return_hidden)
        logits = out.logits[:, :-1].float()
        return _with_extras(logits, completion_ids, completion_mask, temperature, top_k, top_p,
                            out.hidden[:, :-1] if return_hidden else None, return_entropy)

    @_autocast
    def grouped_logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        group_size: int,
        temperature: float = 1.0,
        condition: torch.Tensor | None = None,
        return_hidden: bool = False,
        top_k: int = 0,
        top_p: float = 1.0,
        return_entropy: bool = False,
    ):
        """:meth:`sequence_logprobs` for N = B * G completions of B prompts, each prompt run once.

        ``prompt_ids``/``prompt_mask`` hold the B prompts (left-padded), ``completion_*`` the N
        completions, G consecutive rows per prompt (as rollouts lay them out). The prompt's
        forward pass (virtual tokens or prefix included) fills a KV cache that is repeated G
        times; the completions run on top of it. Same numbers as the ungrouped pass, with the
        prompt tokens computed once per group instead of G times, gradients included.
        """
        from transformers import DynamicCache

        g = group_size
        if not self.backbone.is_causal:
            raise ConfigError(f"{self.backbone.spec!r} is an encoder: grouped log-probs need a causal LM")
        # prefix / shared prompt cache included
        inputs = self.model_inputs(prompt_ids, prompt_mask, condition, extra_positions=completion_ids.shape[1])
        key = cache_name(self.model)
        if inputs[key] is None:
            inputs[key] = DynamicCache(config=self.model.config)
        first = self.model(**inputs, use_cache=True, logits_to_keep=1, output_hidden_states=return_hidden)
        cache = output_cache(first)
        cache.batch_repeat_interleave(g)
        context_mask = inputs["attention_mask"].repeat_interleave(g, 0)
        start = (inputs["position_ids"][:, -1] + 1).repeat_interleave(g, 0)
        steps = completion_ids.shape[1] - 1
        logits = first.logits[:, -1:].float().repeat_interleave(g, 0)
        hidden = first.hidden_states[-1][:, -1:].repeat_interleave(g, 0) if return_hidden else None
        if steps > 0:
            rest = self.model(
                input_ids=completion_ids[:, :-1], position_ids=start[:, None] + torch.arange(steps, device=start.device),
                attention_mask=torch.cat([context_mask, completion_mask[:, :-1].to(context_mask.dtype)], 1),
                use_cache=True, output_hidden_states=return_hidden, **cache_kwarg(self.model, cache))
            logits = torch.cat([logits, rest.logits.float()], 1)
            if return_hidden:
                hidden = torch.cat([hidden, rest.hidden_states[-1]], 1)
        return _with_extras(logits, completion_ids, completion_mask, temperature, top_k, top_p, hidden, return_entropy)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts, config=None, **kwargs):
        """Generate with the KV cache; see :func:`softprompt.generation.generate`."""
        return generate(self, prompts, config, **kwargs)

    def generate_response(self, asked_question: str, conversation_history: list[dict] | None = None,
                          temperature: float = 0.7, max_new_tokens: int = 256, **kwargs) -> tuple[str, list[dict]]:
        """One chat turn (hardPrompt2softPrompt's ``generate_response``): the reply and the updated history.

        ``conversation_history`` is a list of ``{"role": "user"|"assistant"|"system", "content": str}``
        messages (TRL's conversational format; content may be typed text parts,
        ``[{"type": "text", "text": ...}]``, as Gemma-3 templates use); the question is appended as a user message, rendered with the backbone's chat
        template, answered (sampled at ``temperature``; 0 = greedy), and the history comes back
        with the question and the answer appended. The input list is not modified.
        """
        if isinstance(asked_question, list):  # typed parts: [{"type": "text", "text": ...}]
            check_messages([{"role": "user", "content": asked_question}], "generate_response: asked_question")
        if not isinstance(asked_question, (str, list)) or not parts_text(asked_question).strip():
            raise ConfigError("generate_response: asked_question must be a non-empty string (or text parts)")
        if conversation_history:
            check_messages(conversation_history, "generate_response: conversation_history")
        messages = [*(conversation_history or []), {"role": "user", "content": asked_question}]
        out = self.generate([messages], chat=True, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                            temperature=temperature if temperature > 0 else 1.0, **kwargs)
        reply = out.texts[0].strip()
        return reply, [*messages, {"role": "assistant", "content": reply}]


def _with_extras(logits, completion_ids, completion_mask, temperature, top_k, top_p, hidden, entropy: bool):
    """log-probs (B, T) under the sampling policy, 0 off the mask; with ``hidden`` (not None) and
    ``entropy``, the tuple (log-probs, hidden if given, entropy (B, T) if asked)."""
    logp = policy_logprobs(logits, completion_ids, temperature, top_k, top_p) * completion_mask
    extras = ([hidden] if hidden is not None else []) + \
        ([policy_entropy(logits, temperature, top_k, top_p) * completion_mask] if entropy else [])
    return (logp, *extras) if extras else logp
