"""Rollouts for RL on soft prompts: the policy (prompt + optional value head), sampling, rewards.

A rollout samples G completions per prompt through the KV-cached soft-prompt generation
(the prompt is prefilled once per prompt and its cache shared by the G samples), scores the
completions with the rewards, and computes reference log-probs only when a KL term is on, and
old values only when the method has a value head.

The "old" log-probs of the ratio come from the computation that recomputes the new ones (a
teacher-forced pass, logits upcast to fp32 before the log-softmax) whenever the backbone computes
in bf16 / fp16 or a value pass runs anyway: the cached decoding and a teacher-forced pass order
their low-precision arithmetic differently, by about 2^-8 of the logits in bf16, which the ratio
would read as a policy change. In fp32 the two agree to about 1e-6 (tests/test_generation.py) and
generation's own log-probs are kept, saving a forward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import AdapterLoadError, ConfigError
from ..modeling.backbones import keep_base_weights, untouched
from ..modeling.generation import GenerationConfig, GenerationOutput
from ..modeling.lockstep import in_lockstep
from ..modeling.model import SoftPromptModel
from ..tasks.data import generation_input


class Policy(nn.Module):
    """A SoftPromptModel with an optional scalar value head on the last hidden state.

    Has the classifier interface the trainer and checkpoints use: ``model``,
    ``trainable_parameters()``, ``head_parameters()``, ``head_state()``.
    """

    def __init__(self, model: SoftPromptModel, value_head: bool = False, tune_v_head: bool = True,
                 unfrozen: list[nn.Parameter] | None = None):
        super().__init__()
        self.model = model
        self.value_head = nn.Linear(model.backbone.hidden_size, 1) if value_head else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1 / (model.backbone.hidden_size + 1))
            nn.init.zeros_(self.value_head.bias)
            self.value_head.requires_grad_(tune_v_head)
            self.value_head.to(model.device)
        self.unfrozen = list(unfrozen or [])  # backbone blocks trained too (num_layers_unfrozen)

        keep_base_weights(model.model, self.unfrozen)  # the untouched model keeps their values of now

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.model.trainable_parameters() + self.head_parameters()

    def head_parameters(self) -> list[nn.Parameter]:
        head = [p for p in self.value_head.parameters() if p.requires_grad] if self.value_head is not None else []
        return head + self.unfrozen

    def head_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps besides the adapter: the value head. (Unfrozen blocks go with
        the adapter: save_adapter's ``backbone_layers.safetensors``.)"""
        return {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()} if self.value_head else {}

    def load_head_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.value_head is not None:
            self.value_head.load_state_dict({k[len("value_head."):]: v for k, v in tensors.items()
                                             if k.startswith("value_head.")})

    def logprobs(self, ro: Rollout, with_values: bool = False, truncate: bool = True, with_entropy: bool = False):
        """Teacher-forced (log-probs (N, T) of the rollout's completions now, values (N, T) or None,
        the policy's entropy (N, T) at each token or None).

        Under the rollout's sampling policy (softmax(logits / T) truncated to its top-k / top-p
        and renormalised, as generation stored them), or with ``truncate=False`` under the
        untruncated softmax(logits / T) (the reference's side of the KL).
        """
        top_k, top_p = (ro.top_k, ro.top_p) if truncate else (0, 1.0)
        adapter = self.model.adapter
        dropout = adapter is not None and adapter.training and getattr(adapter.config, "dropout", 0) > 0

        # each prompt's forward once, shared by its G completions (not with a sharded backbone:
        # its gradients would flow through a cache that an earlier forward built)
        if ro.group_size > 1 and not dropout and not in_lockstep():
            cond = ro.condition[::ro.group_size] if ro.condition is not None else None
            out = self.model.grouped_logprobs(ro.gen.prompt_ids, ro.gen.prompt_mask, ro.completion_ids,
                                              ro.completion_mask, ro.group_size, temperature=ro.temperature,
                                              condition=cond, return_hidden=with_values, top_k=top_k, top_p=top_p,
                                              return_entropy=with_entropy)
        else:
            out = self.model.sequence_logprobs(ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask,
                                               temperature=ro.temperature, condition=ro.condition,
                                               return_hidden=with_values, top_k=top_k, top_p=top_p,
                                               return_entropy=with_entropy)
        out = list(out) if isinstance(out, tuple) else [out]
        logp, hidden = out.pop(0), out.pop(0) if with_values else None
        entropy = out.pop(0) if with_entropy else None
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1) if with_values else None
        return logp, values, entropy


@dataclass
class Rollout:
    """N = B * G completions of B prompts, with everything the RL objectives need.

    The policy is the distribution the completions were sampled from: softmax(logits /
    ``temperature``) truncated to ``top_k`` / ``top_p`` and renormalised (no truncation when
    those are off, T = 1 and no truncation for greedy decoding). The old log-probs (from
    generation) and the recomputed ones of the ratio are under it; the reference's log-probs
    are under its untruncated softmax(logits / T), so the KL is KL(policy || untruncated reference).
    """

    examples: list  # the B prompt examples
    gen: GenerationOutput
    rewards: torch.Tensor  # (N,) total reward; NaN rows are not valid
    reward_parts: dict[str, torch.Tensor]
    temperature: float
    max_new_tokens: int
    ref_logprobs: torch.Tensor | None = None  # (N, T)
    old_values: torch.Tensor | None = None  # (N, T)
    condition: torch.Tensor | None = None
    memo: dict = field(default_factory=dict)  # advantages etc., fixed across inner updates
    top_k: int = 0  # the sampling policy's truncation (0 / 1.0: off)
    top_p: float = 1.0
    recomputed_logprobs: torch.Tensor | None = None  # (N, T) the old log-probs from a teacher-forced pass
    engine_log_ratio: torch.Tensor | None = None  # (N, T) log pi_trainer - log pi_engine (vLLM), 0 off the mask
    is_cap: float | None = None  # truncation of the engine-mismatch weights (None: not applied)
    engine_stats: dict = field(default_factory=dict)  # the engines' log-prob gap, for the logs

    def __post_init__(self):
        self.valid = torch.isfinite(self.rewards)
        self.prompt_ids, self.prompt_mask = self.gen.expanded_prompts()

    @property
    def group_size(self) -> int:
        return self.gen.group_size

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.gen.completion_ids

    @property
    def completion_mask(self) -> torch.Tensor:
        return self.gen.completion_mask

    @property
    def old_logprobs(self) -> torch.Tensor:
        """The sampled tokens' log-probs under the policy that sampled them: from the teacher-forced
        pass when one ran (see the module's docstring), else as generation stored them."""
        return self.recomputed_logprobs if self.recomputed_logprobs is not None else self.gen.logprobs

    @property
    def is_weights(self) -> torch.Tensor | None:
        """Per-token weights (N, T) for the policy loss when another engine sampled the tokens:
        min(pi_trainer / pi_engine, cap) (TRL's truncated importance sampling); None otherwise."""
        if self.engine_log_ratio is None or self.is_cap is None:
            return None
        return torch.exp(self.engine_log_ratio).clamp(max=self.is_cap)

    @property
    def sequence_is_weights(self) -> torch.Tensor | None:
        """The same for a whole-sequence action (N,): min(prod_t pi_trainer / pi_engine, cap)."""
        if self.engine_log_ratio is None or self.is_cap is None:
            return None
        return torch.exp((self.engine_log_ratio * self.completion_mask).sum(1)).clamp(max=self.is_cap)

    @property
    def mask(self) -> torch.Tensor:
        """Tokens that count in the loss: generated, of a sample with a finite reward."""
        return self.gen.completion_mask * self.valid[:, None].to(self.gen.completion_mask.dtype)

    def subset(self, prompts: torch.Tensor) -> Rollout:
        """The rollout of prompts ``prompts`` (indices into the B prompts) with all their samples:
        a minibatch. Per-sample tensors, ``memo`` entries included (advantages computed over the
        whole rollout), are sliced; the rest is shared."""
        g, n = self.group_size, len(self.gen.texts)
        rows = (prompts[:, None] * g + torch.arange(g, device=prompts.device)).flatten()
        pick = rows.tolist()

        def cut(x):
            return x[rows.to(x.device)] if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == n else x
        gen = replace(self.gen, prompts=[self.gen.prompts[i] for i in prompts.tolist()],
                      prompt_ids=self.gen.prompt_ids[prompts], prompt_mask=self.gen.prompt_mask[prompts],
                      prompt_index=torch.arange(len(prompts), device=prompts.device).repeat_interleave(g),
                      completion_ids=cut(self.gen.completion_ids), completion_mask=cut(self.gen.completion_mask),
                      logprobs=cut(self.gen.logprobs), texts=[self.gen.texts[i] for i in pick],
                      finish_reasons=[self.gen.finish_reasons[i] for i in pick])
        return Rollout([self.examples[i] for i in prompts.tolist()], gen, cut(self.rewards),
                       {k: cut(v) for k, v in self.reward_parts.items()}, self.temperature, self.max_new_tokens,
                       ref_logprobs=cut(self.ref_logprobs), old_values=cut(self.old_values),
                       condition=cut(self.condition), memo={k: cut(v) for k, v in self.memo.items()},
                       top_k=self.top_k, top_p=self.top_p, recomputed_logprobs=cut(self.recomputed_logprobs),
                       engine_log_ratio=cut(self.engine_log_ratio), is_cap=self.is_cap, engine_stats=self.engine_stats)


@dataclass
class RLInputs:
    """One rollout batch for the objectives; the policy's forward is memoised per inner update."""

    rollout: Rollout
    policy: Policy
    epoch: int = 0
    step: int = 0
    with_entropy: bool = False  # the forward pass also returns the policy's entropy (PPO's entropy_coef)
    _memo: dict = field(default_factory=dict)

    def fresh(self) -> None:
        """Forget forward passes (the policy changed); keep the rollout."""
        self._memo.clear()

    def logprobs(self) -> torch.Tensor:
        if "logp" not in self._memo:
            self._memo["logp"], self._memo["values"], self._memo["entropy"] = self.policy.logprobs(
                self.rollout, self.policy.value_head is not None, with_entropy=self.with_entropy)
        return self._memo["logp"]

    def minibatches(self, count: int) -> list[RLInputs]:
        """This rollout as ``count`` minibatches of whole prompt groups (fewer when it has fewer
        prompts), each with its own forward pass; the rollout's ``memo`` (advantages) must be
        computed over all of it first (``Objective.precompute``)."""
        prompts = len(self.rollout.examples)
        if count <= 1 or prompts <= 1:
            return [self]
        device = self.rollout.gen.prompt_ids.device
        return [RLInputs(self.rollout.subset(part), self.policy, self.epoch, self.step, self.with_entropy)
                for part in torch.arange(prompts, device=device).tensor_split(min(count, prompts))]

    def entropy(self) -> torch.Tensor:
        """The policy's entropy (N, T) at each completion token, from the same forward pass."""
        if not self.with_entropy:
            raise ConfigError("this rollout's inputs were built without the entropy (with_entropy=False)")
        self.logprobs()
        return self._memo["entropy"]

    def logprobs_and_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.policy.value_head is None:
            raise ConfigError("this objective needs a value head; the policy has none")
        self.logprobs()
        return self._memo["logp"], self._memo["values"]


class Reference:
    """Log-probs under the reference policy, on the untouched backbone (blocks trained in place at
    their loaded weights): ``initial_prompt`` = the adapter as this run started it (its init, or
    the ``init_from`` weights); ``none`` = no adapter at all (LoRA's layers off too), the base model.

    Always under the untruncated softmax(logits / T), whatever the rollout's top-k / top-p: a
    truncated reference would give the policy's tokens outside its own set probability 0 and
    the KL would be infinite whenever the two sets differ. With truncated sampling the KL is
    then KL(truncated policy || untruncated reference), which is finite but not 0 at the start:
    -log p_ref(S) per token, S the truncation set.
    """

    def __init__(self, policy: Policy, kind: str = "initial_prompt"):
        self.policy, self.kind = policy, kind
        adapter = policy.model.adapter
        self.initial = {k: v.detach().clone() for k, v in adapter.adapter_state_dict().items()} \
            if adapter is not None else {}

    def state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps so a resumed run has the same reference: the initial adapter
        state (nothing for ``none``, which is the base model)."""
        return self.initial if self.kind != "none" else {}

    def load_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Take a checkpoint's initial adapter state; refuse one that is not this adapter's."""
        if self.kind == "none":
            return
        own = self.initial
        if set(tensors) != set(own) or any(tuple(t.shape) != tuple(own[k].shape) for k, t in tensors.items()):
            raise AdapterLoadError(f"{source}: the KL reference's tensors do not match this run's adapter "
                                   f"(expected {sorted(own)[:3]} with their shapes, found {sorted(tensors)[:3]})")
        self.initial = {k: t.to(device=own[k].device, dtype=own[k].dtype) for k, t in tensors.items()}

    def active(self):
        """A context in which the policy's model computes as the reference (the adapter at its
        initial weights, or no adapter), for log-probs outside a rollout (DPO's)."""
        return self._swapped()

    @contextlib.contextmanager
    def _swapped(self):
        model = self.policy.model
        if self.kind == "none":
            with model.untouched():
                yield
            return

        adapter = model.adapter
        current = {k: v.detach().clone() for k, v in adapter.adapter_state_dict().items()} \
            if adapter is not None else {}
        with torch.no_grad(), untouched(model.model, lora=False):
            if adapter is not None:
                adapter.load_adapter_state_dict(self.initial, "the KL reference")
            try:
                yield
            finally:
                if adapter is not None:
                    adapter.load_adapter_state_dict(current, "the policy's adapter")

    @torch.no_grad()
    def logprobs(self, ro: Rollout) -> torch.Tensor:
        with self._swapped():
            return self.policy.logprobs(ro, truncate=False)[0]


def score(rewards, examples: list, gen: GenerationOutput) -> tuple[list[str], list, torch.Tensor, dict]:
    """Rewards of the N samples of ``gen`` (G per example): (prompt per sample, example per
    sample, total reward (N,), reward parts)."""
    g = gen.group_size
    expanded = [examples[i // g] for i in range(len(gen.texts))]
    prompts = [e.text for e in expanded]
    total, parts = rewards(prompts, gen.texts, expanded)
    return prompts, expanded, total, parts


def engine_mismatch(trainer_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor):
    """(log pi_trainer - log pi_engine (N, T), 0 off the mask; the logs' numbers) for tokens that
    another engine sampled: the mean and max |difference| of the two log-probs, and the k3
    estimate of KL(pi_engine || pi_trainer) from the engine's samples (mean of e^d - d - 1, d
    the log ratio; 0 when the engines agree)."""
    m = mask.bool()
    d = torch.where(m, trainer_logp.float() - engine_logp.float(), 0.0)
    wide = d.double()  # e^d - d - 1 for |d| ~ 1e-5 is ~1e-10: below fp32's rounding of e^d
    gap, k3 = d[m].abs(), (torch.exp(wide) - wide - 1)[m]
    stats = {"vllm/logprob_diff_mean": float(gap.mean()) if gap.numel() else 0.0,
             "vllm/logprob_diff_max": float(gap.max()) if gap.numel() else 0.0,
             "vllm/kl": float(k3.mean()) if k3.numel() else 0.0}
    return d, stats


@torch.no_grad()
def make_rollout(policy: Policy, examples: list, gen_config: GenerationConfig, rewards,
                 reference: Reference | None = None, values: bool = False,
                 condition: torch.Tensor | None = None, engine=None, is_cap: float | None = None) -> Rollout:
    """Sample G completions per example (on ``engine`` when given: a VLLMEngine; else the policy's
    own generation), score them, and compute what the objectives need. With an engine, the old
    log-probs are always the trainer's (a teacher-forced pass) and the engine's are kept only to
    measure the gap and, with ``is_cap``, to weight the loss (:attr:`Rollout.is_weights`)."""
    was_training = policy.training
    policy.eval()
    try:
        generate = engine.generate if engine is not None else policy.model.generate
        gen = generate([generation_input(e) for e in examples], gen_config, condition=condition)
        temperature = gen_config.temperature if gen_config.do_sample else 1.0
        truncation = {"top_k": gen_config.top_k, "top_p": gen_config.top_p} if gen_config.do_sample else {}
        cond = condition.repeat_interleave(gen.group_size, 0) if condition is not None else None
        ref = None
        if reference is not None:
            pending = Rollout(examples, gen, torch.zeros(len(gen.texts)), {}, temperature,
                              gen_config.max_new_tokens, condition=cond, **truncation)
            ref = reference.logprobs(pending)
            if reference.kind == "none" and temperature == 1.0 and not gen_config.chat \
                    and gen_config.max_prompt_tokens is None:
                _share_base_logprobs(rewards, examples, gen, ref)
        total, parts = score(rewards, examples, gen)[2:]
        ro = Rollout(examples, gen, total.to(gen.logprobs.device), parts, temperature, gen_config.max_new_tokens,
                     ref_logprobs=ref, condition=cond, **truncation)
        if values or engine is not None or policy.model.compute_dtype != torch.float32:
            ro.recomputed_logprobs, ro.old_values, _ = policy.logprobs(ro, with_values=values)  # as the ratio will
        if engine is not None:
            ro.engine_log_ratio, ro.engine_stats = engine_mismatch(ro.recomputed_logprobs, gen.logprobs,
                                                                   gen.completion_mask)
            ro.is_cap = is_cap
        return ro
    finally:
        policy.train(was_training)


def _share_base_logprobs(rewards, examples: list, gen: GenerationOutput, ref: torch.Tensor) -> None:
    """The no-prompt reference pass already holds log p_base(completion | prompt): hand it to
    rewards that would otherwise run that same pass (the perplexity reward)."""
    takers = [p.fn for p in getattr(rewards, "parts", []) if hasattr(p.fn, "share_base_logprobs")]
    if not takers:
        return
    mask = gen.completion_mask.to(ref.dtype)
    nll, count = -(ref * mask).sum(1).cpu(), mask.sum(1).cpu()
    prompts = [examples[i // gen.group_size].text for i in range(len(gen.texts))]
    for fn in takers:
        fn.share_base_logprobs(prompts, gen.texts, nll, count)
