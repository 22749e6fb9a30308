"""Prompts with responses (or conversations) for supervised fine-tuning of a generation adapter:
the response tokens' cross-entropy, evaluated as loss and perplexity on held-out responses."""

from __future__ import annotations

import math
import time

import torch

from ...modeling.sft_data import sft_batch
from ...objectives.sft import SFTInputs, response_nll
from ...storage import write_json


class SFTWork:
    kind = "sft"
    evaluate_before = True  # the initial prompt's loss, in metrics.json as before_*
    main_metric = "response_logprob"  # mean log-prob of a held-out response token: higher is better

    def __init__(self, config, policy, data_info: dict | None = None):
        self.config, self.module = config, policy
        self.method = config.method
        self.gen = config.generation.to_generation_config(group_size=1, seed=config.seed)
        self.data_info = data_info or {}

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def batch(self, examples: list):
        return sft_batch(self.module.model.tokenizer, examples, self.gen, self.method.response_field,
                         self.method.max_completion_tokens)

    def inputs(self, examples: list, epoch: int, step: int, device) -> tuple[SFTInputs, dict]:
        batch = self.batch(examples)
        return SFTInputs(batch.to(device), self.module, epoch, step), {"truncated": batch.truncated}

    def count_truncated(self, train: list, evaluation: list) -> dict:
        """Completions longer than method.max_completion_tokens (cut at the end), per split."""
        import logging

        limit = self.method.max_completion_tokens
        for name, examples in (("train", train), ("eval", evaluation)):
            cut = sum(self.batch(examples[i:i + 64]).truncated for i in range(0, len(examples), 64))
            self.data_info.update({f"{name}_examples": len(examples), f"{name}_truncated": cut})
            if cut:
                logging.getLogger("softprompt").warning("%d of %d %s completions are longer than "
                                                        "method.max_completion_tokens=%d and are cut", cut,
                                                        len(examples), name, limit)
        self.data_info["max_completion_tokens"] = limit
        return self.data_info

    @torch.no_grad()
    def evaluate(self, examples: list) -> tuple[dict, list[dict]]:
        start, policy = time.perf_counter(), self.module
        was_training = policy.training
        policy.eval()
        size, nll_sum, token_sum, rows = self.config.train.eval_batch, 0.0, 0.0, []
        for b in range(0, len(examples), size):
            chunk = examples[b:b + size]
            nll, tokens = response_nll(policy.model, self.batch(chunk).to(policy.model.device))
            nll_sum, token_sum = nll_sum + float(nll.sum()), token_sum + float(tokens.sum())
            rows += [{"index": e.index, "prompt": e.text, "loss_tokens": int(t), "nll": float(n)}
                     for e, n, t in zip(chunk, nll.tolist(), tokens.tolist())]
        policy.train(was_training)
        loss = nll_sum / max(token_sum, 1.0)
        runtime = time.perf_counter() - start
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_response_logprob": -loss,
                "eval_loss_tokens": token_sum, "eval_runtime": runtime}, rows

    def report(self, run, before_rows, after_rows) -> None:
        write_json(run.path / "data.json", self.data_info)
