"""Batched generation with soft prompts and the KV cache on.

The prompt batch (left-padded, virtual tokens placed as docs/design.md says) is prefilled
once; with ``group_size=G`` its cache is then repeated G times, so G samples of one
prompt share one prefill. Decoding feeds one token per step through the cache, never
re-inserting the virtual tokens. Rows that finish are dropped from the batch once enough
of them have, so late steps cost what the unfinished rows cost.

The returned ``logprobs`` are each sampled token's log-prob under the sampling policy,
the distribution the token was drawn from (:func:`policy_scores`): softmax(logits / T)
truncated to the top-k / top-p tokens and renormalised when those are set, plain
softmax(logits / T) otherwise, and log softmax(logits) for greedy decoding. RL uses the
same policy when it recomputes them: :meth:`SoftPromptModel.sequence_logprobs` with the
same ``temperature``, ``top_k`` and ``top_p`` gives the same numbers on the same sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from ..config.fields import check_instance, hfield
from ..errors import ConfigError, closest
from ..hf_compat import cache_kwarg
from .kernels import packed_linears
from .lockstep import lockstep_any


@dataclass
class GenerationConfig:
    max_new_tokens: int = hfield(64, "tokens to generate at most per sample", ge=1)
    do_sample: bool = hfield(True, "sample (True) or greedy decoding (False)")
    temperature: float = hfield(1.0, "softmax temperature of the sampling policy", gt=0)
    top_k: int = hfield(0, "sample among the k most likely tokens (0: off)", ge=0)
    top_p: float = hfield(1.0, "nucleus sampling mass (1.0: off)", gt=0, le=1)
    group_size: int = hfield(1, "samples per prompt; the prompt is prefilled once and its cache shared", ge=1)
    stop_strings: list[str] = hfield([], "stop a sample once its text contains one of these (cut from the text)")
    eos_token_ids: list[int] | None = hfield(None, "token ids that end a sample (None: the model's EOS ids)", ge=0)
    seed: int | None = hfield(None, "seed for sampling (None: the global torch RNG)", ge=0)
    chat: bool = hfield(False, "wrap each prompt as a user message in the model's chat template")
    chat_template_kwargs: dict = hfield({}, "extra variables for the chat template (e.g. {'enable_thinking': False})")
    max_prompt_tokens: int | None = hfield(None, "keep only the last this-many prompt tokens", ge=1)
    fast_kernels: bool = hfield(True, "decode with pre-packed fp32 weights on CPU (softprompt.kernels); keeps "
                                      "a packed copy of the linear weights in memory")

    def __post_init__(self) -> None:
        check_instance(self, "generation")  # each option's declared range
        if isinstance(self.stop_strings, str):
            self.stop_strings = [self.stop_strings]

    @classmethod
    def from_kwargs(cls, base: GenerationConfig | None = None, **kwargs) -> GenerationConfig:
        names = {f.name for f in fields(cls)}
        for key in kwargs:
            if key not in names:
                raise ConfigError(f"unknown generation option {key!r}{closest(key, names)}")
        values = {f.name: getattr(base, f.name) for f in fields(cls)} if base is not None else {}
        values.update(kwargs)
        return cls(**values)


@dataclass
class GenerationOutput:
    prompts: list[str]
    prompt_ids: torch.Tensor  # (B, Lp) left-padded
    prompt_mask: torch.Tensor  # (B, Lp)
    prompt_index: torch.Tensor  # (N,) which prompt each sample answers; N = B * group_size
    completion_ids: torch.Tensor  # (N, T) right-padded with the pad id
    completion_mask: torch.Tensor  # (N, T) 1 on generated tokens (EOS / stop token included)
    logprobs: torch.Tensor  # (N, T) log-prob of each generated token under the sampling policy (top-k / top-p
    # truncation included, see policy_scores), 0 on pads
    texts: list[str]
    finish_reasons: list[str]  # "eos", "stop" or "length"
    group_size: int = 1

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())

    def groups(self) -> list[list[str]]:
        g = self.group_size
        return [self.texts[i * g:(i + 1) * g] for i in range(len(self.prompts))]

    def expanded_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids and mask repeated to line up with the N samples."""
        return self.prompt_ids[self.prompt_index], self.prompt_mask[self.prompt_index]


# --------------------------------------------------------------------------- cache


class _BufferLayer(DynamicLayer):
    """A KV layer that writes into a preallocated buffer instead of concatenating each step."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self.kbuf = key_states.new_empty(b, h, self.capacity, d)
        self.vbuf = value_states.new_empty(b, value_states.shape[1], self.capacity, value_states.shape[3])
        self.is_initialized = True

    def _views(self) -> None:
        self.keys = self.kbuf[:, :, : self.length]
        self.values = self.vbuf[:, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = key_states.shape[-2]
        if self.length + t > self.capacity:
            raise RuntimeError(f"KV buffer of {self.capacity} positions is full")
        self.kbuf[:, :, self.length:self.length + t] = key_states
        self.vbuf[:, :, self.length:self.length + t] = value_states
        self.length += t
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.kbuf = self.kbuf.repeat_interleave(repeats, dim=0)
            self.vbuf = self.vbuf.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.kbuf = self.kbuf[indices]
            self.vbuf = self.vbuf[indices]
            self._views()


class BufferCache(DynamicCache):
    """DynamicCache whose layers preallocate ``capacity`` positions (generation only, no autograd)."""

    def __init__(self, num_layers: int, capacity: int):
        Cache.__init__(self, layers=[_BufferLayer(capacity) for _ in range(num_layers)])


def generation_cache(model_config, capacity: int) -> DynamicCache:
    """A preallocated cache, or a plain DynamicCache for models with sliding-window layers."""
    text = model_config.get_text_config(decoder=True)
    layer_types = getattr(text, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return DynamicCache(config=model_config)
    return BufferCache(text.num_hidden_layers, capacity)


# --------------------------------------------------------------------------- helpers


def eos_ids(tokenizer, model, config: GenerationConfig) -> list[int]:
    if config.eos_token_ids is not None:
        return list(config.eos_token_ids)
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(ids)


def encode_prompts(tokenizer, prompts: Sequence[str], config: GenerationConfig, device) -> dict:
    if isinstance(prompts, str) or not len(prompts):
        raise ConfigError("prompts must be a non-empty list of strings")
    texts = list(prompts)
    if config.chat:  # a prompt is a user message, or a whole conversation (a list of role/content dicts)
        texts = [apply_chat_template(tokenizer, _messages(p), config.chat_template_kwargs) for p in texts]
    elif not all(isinstance(p, str) for p in texts):
        raise ConfigError("prompts must be strings (conversations as message lists need chat=True)")
    old_side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=not config.chat,
                        truncation=config.max_prompt_tokens is not None, max_length=config.max_prompt_tokens)
    finally:
        tokenizer.truncation_side = old_side
    if enc["input_ids"].shape[1] == 0 or (enc["attention_mask"].sum(1) == 0).any():
        raise ConfigError("every prompt needs at least one token")
    return {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}


def check_chat_template(tokenizer, chat: bool, model: str = "the model") -> None:
    """Refuse ``chat`` for a tokenizer without a chat template (GPT-2, base models) in one line."""
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"generation.chat is on but {model!r} has no chat template (its tokenizer sets none, as "
                          f"base models such as gpt2 do): set generation.chat=false to feed the prompts as plain text, "
                          f"or use an instruct model")


def apply_chat_template(tokenizer, messages: list[dict], template_kwargs: dict | None = None,
                        add_generation_prompt: bool = True) -> str:
    """The text of ``messages`` under the tokenizer's chat template, ready for the assistant's turn;
    ``template_kwargs`` reach the template as variables (``enable_thinking: false`` for Qwen3);
    ``add_generation_prompt`` False renders the conversation as it is (SFT). Content given as typed parts (``[{"type": "text", "text": ...}]``) reaches a template that
    renders parts (Gemma-3's) as it is, and any other template as the parts' text joined by newlines."""
    check_chat_template(tokenizer, True)
    messages = check_messages(messages)
    if any(isinstance(m["content"], list) for m in messages) and not renders_typed_parts(tokenizer):
        messages = [{**m, "content": parts_text(m["content"])} for m in messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **dict(template_kwargs or {}))


def parts_text(content) -> str:
    """A message's content as text: itself, or its typed text parts joined by newlines."""
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


_PROBE = "softprompt-typed-part-probe"


def renders_typed_parts(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders typed content parts (Gemma-3's does; SmolLM2's
    would print the list's repr): a one-part probe, remembered per tokenizer."""
    known = getattr(tokenizer, "_softprompt_typed_parts", None)
    if known is None:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": _PROBE}]}], tokenize=False,
                add_generation_prompt=True)
            known = _PROBE in text and "'type'" not in text and '"type"' not in text
        except Exception:  # a template that fails on lists (jinja errors of every kind) renders no parts
            known = False
        tokenizer._softprompt_typed_parts = known
    return known


def check_messages(messages, where: str = "a chat prompt") -> list[dict]:
    """``messages`` if it is a conversation (TRL's conversational format): a non-empty list of
    ``{"role": str, "content": str | [{"type": "text", "text": str}, ...]}``; else a ConfigError
    saying what is wrong."""
    def bad(why: str):
        raise ConfigError(f"{where}: {why}; expected a string or a list of {{'role': ..., 'content': ...}} messages "
                          f"(content a string or [{{'type': 'text', 'text': ...}}] parts); got {str(messages)[:80]!r}")

    if not isinstance(messages, list) or not messages:
        bad("not a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            bad(f"message {i} has no 'role' string")
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    bad(f"message {i} has a content part that is not {{'type': 'text', 'text': str}} (only text "
                        "parts are supported)")
        elif not isinstance(content, str):
            bad(f"message {i} has no 'content' string or list of parts")
    return messages


def _messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return check_messages(prompt)


def _warpers(temperature: float, top_k: int, top_p: float):
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs


def policy_scores(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  keep: torch.Tensor | None = None) -> torch.Tensor:
    """Scores (..., V) whose softmax is the sampling policy for logits (..., V).

    pi(a) = softmax(logits / T)(a) / Z over the set S of the top-k tokens, then the smallest
    set of those holding top-p of their renormalised mass (transformers' Temperature, TopK and
    TopP warpers, in that order); tokens outside S score -inf, so pi(a) = 0 there. With
    neither top-k nor top-p this is logits / T. ``keep`` (ids of shape logits.shape[:-1]):
    the token scored at each position stays in S with its logit / T, so its log-prob is
    finite. A token drawn from pi is in S already; when recomputing it, this only matters at
    float ties on the boundary, or after an update pushed it out of S, where it gets
    p(a) / (p(S) + p(a)) instead of 0 (p = softmax(logits / T)).
    """
    warp = _warpers(temperature, top_k, top_p)
    if not len(warp):
        return logits
    flat = logits.reshape(-1, logits.shape[-1])
    scores = warp(None, flat)
    if keep is not None and (top_k or top_p < 1.0):
        ids = keep.reshape(-1, 1)
        tempered = flat / temperature if temperature != 1.0 else flat
        scores = scores.scatter(1, ids, tempered.gather(1, ids))
    return scores.view(logits.shape)


def policy_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0) -> torch.Tensor:
    """log pi(token) (...) for logits (..., V) and tokens (...), pi the sampling policy of
    :func:`policy_scores` (each scored token kept in the truncation set)."""
    scores = policy_scores(logits, temperature, top_k, top_p, keep=tokens)
    return F.log_softmax(scores, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def policy_entropy(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The entropy (...) of the sampling policy of :func:`policy_scores` at each position of logits (..., V)."""
    logp = F.log_softmax(policy_scores(logits, temperature, top_k, top_p), -1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(-1)


# --------------------------------------------------------------------------- main loop


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from unnormalised probabilities (N, V), by inverse CDF.

    Exact like ``torch.multinomial`` and about 10x cheaper over a 49k vocabulary (one
    uniform per row instead of an exponential per entry). Zero-probability entries are never
    drawn: u lies in (0, total], and the first index whose CDF reaches u has mass.
    """
    cdf = probs.cumsum(-1)
    u = (1.0 - torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_(max=probs.shape[-1] - 1).squeeze(1)


@torch.no_grad()
def generate(model, prompts, config: GenerationConfig | None = None, condition: torch.Tensor | None = None,
             **kwargs) -> GenerationOutput:
    """Generate from a :class:`SoftPromptModel` (or a plain one: adapter None).

    ``prompts`` is a list of strings or a dict with left-padded ``input_ids`` and
    ``attention_mask``. ``condition`` (B, d) feeds a conditional prompt.
    """
    config = GenerationConfig.from_kwargs(config, **kwargs)
    if not model.backbone.is_causal:
        raise ConfigError(f"model {model.backbone.spec!r} is an encoder; generation needs a causal LM")
    with packed_linears(model.model, batch_hint=16, enabled=config.fast_kernels), model.autocast():
        return _generate(model, prompts, config, condition)


def _generate(model, prompts, config: GenerationConfig, condition: torch.Tensor | None) -> GenerationOutput:
    tok, lm = model.tokenizer, model.model
    device = model.device
    if isinstance(prompts, dict):
        enc = {k: prompts[k].to(device) for k in ("input_ids", "attention_mask")}
        texts_in = tok.batch_decode(enc["input_ids"], skip_special_tokens=True)
    else:
        enc = encode_prompts(tok, prompts, config, device)
        texts_in = list(prompts)
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
    batch, g, max_new = prompt_ids.shape[0], config.group_size, config.max_new_tokens
    if condition is not None:
        condition = condition.to(device)

    # prefill: the prompt batch once, the prefix (if any) first in the cache
    n_prefix = model.num_prefix_tokens
    capacity = n_prefix + model.num_sequence_tokens + prompt_ids.shape[1] + max_new
    cache = generation_cache(lm.config, capacity)
    if n_prefix:
        for layer, (k, v) in enumerate(model.prefix_key_values(batch)):
            cache.update(k, v, layer)
    inputs = model.model_inputs(prompt_ids, prompt_mask, condition, cache=cache, extra_positions=max_new)
    out = lm(**inputs, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1].float()
    attn = inputs["attention_mask"]
    next_pos = inputs["position_ids"][:, -1] + 1
    if g > 1:
        cache.batch_repeat_interleave(g)
        logits, attn, next_pos = (x.repeat_interleave(g, 0) for x in (logits, attn, next_pos))

    n = batch * g
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out_ids = torch.full((n, max_new), pad_id, dtype=torch.long, device=device)
    out_mask = torch.zeros((n, max_new), dtype=torch.long, device=device)
    out_logp = torch.zeros((n, max_new), dtype=torch.float32, device=device)
    reasons = ["length"] * n
    eos = torch.tensor(eos_ids(tok, lm, config), dtype=torch.long, device=device)
    stop = _StopStrings(tok, config.stop_strings) if any(config.stop_strings) else None
    gen = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
    # full-capacity mask; the live part is attn_buf[:, :length]
    length = attn.shape[1]
    attn_buf = torch.cat([attn, attn.new_ones(n, max_new)], 1)
    rows = torch.arange(n, device=device)  # original row index of each row in the batch
    alive = torch.ones(n, dtype=torch.bool, device=device)  # rows of the batch still generating

    for t in range(max_new):
        if config.do_sample:
            scores = policy_scores(logits, config.temperature, config.top_k, config.top_p)
            token = sample(F.softmax(scores, -1), gen)
        else:
            scores, token = logits, logits.argmax(-1)
        live = rows[alive]
        out_ids[live, t] = token[alive]
        out_mask[live, t] = 1
        out_logp[live, t] = F.log_softmax(scores[alive], -1).gather(1, token[alive, None]).squeeze(1)

        done = alive & torch.isin(token, eos)
        for r in rows[done].tolist():
            reasons[r] = "eos"
        if stop is not None:
            hit = alive & ~done & stop(out_ids[rows, : t + 1])
            for r in rows[hit].tolist():
                reasons[r] = "stop"
            done |= hit
        alive &= ~done
        if t == max_new - 1 or not lockstep_any(bool(alive.any())):  # a sharded backbone: all ranks go on
            break
        # drop finished rows once they are a quarter of the batch: a cache copy costs about a step
        if int((~alive).sum()) * 4 >= len(rows) and alive.any():
            keep = alive.nonzero().squeeze(1)
            rows, token, next_pos, attn_buf, alive = rows[keep], token[keep], next_pos[keep], attn_buf[keep], alive[keep]
            cache.batch_select_indices(keep)
        token = torch.where(alive, token, pad_id)
        length += 1
        step = lm(input_ids=token[:, None], attention_mask=attn_buf[:, :length], position_ids=next_pos[:, None],
                  use_cache=True, logits_to_keep=1, **cache_kwarg(lm, cache))
        logits = step.logits[:, -1].float()
        next_pos = next_pos + 1

    # trim columns nobody reached
    width = int(out_mask.sum(1).max())
    out_ids, out_mask, out_logp = out_ids[:, :width], out_mask[:, :width], out_logp[:, :width]
    texts = [tok.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(out_ids, out_mask)]
    if config.stop_strings:
        texts = [_cut_at_stop(t, config.stop_strings) if r == "stop" else t for t, r in zip(texts, reasons)]
    return GenerationOutput(
        prompts=texts_in, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
        prompt_index=torch.arange(batch, device=device).repeat_interleave(g),
        completion_ids=out_ids, completion_mask=out_mask, logprobs=out_logp, texts=texts,
        finish_reasons=reasons, group_size=g,
    )


class _StopStrings:
    """Per-row check that a stop string has just been completed, on the decoded tail only."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.window = max(len(s) for s in self.stops) + 1  # a token carries at least one character

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(ids[:, -self.window:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], dtype=torch.bool, device=ids.device)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
