"""Preference pairs for DPO on a generation adapter: each batch holds the chosen responses' rows and
the rejected ones' (as SFT tokenizes a prompt and its response), with the reference's log-probs
of both, computed once per pair and kept."""

from __future__ import annotations

import time

import torch

from ...modeling.sft_data import sft_batch
from ...objectives.dpo import DPOInputs, dpo_loss, sequence_logps
from ...storage import write_json
from ...tasks.data import Example


class DPOWork:
    kind = "dpo"
    evaluate_before = True  # the held-out pairs under the initial adapter, in metrics.json as before_*
    main_metric = "rewards/accuracies"  # held-out pairs whose chosen response gains more than the rejected

    def __init__(self, config, policy, reference, data_info: dict | None = None):
        self.config, self.module, self.reference = config, policy, reference
        self.method = config.method
        self.gen = config.generation.to_generation_config(group_size=1, seed=config.seed)
        self.data_info = data_info or {}
        self._reference_logps: dict[int, tuple[float, float]] = {}  # id(pair) -> the reference's (chosen, rejected)

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def prompt(self, pair) -> str:
        return pair.context or self.method.empty_context_prompt

    def batch(self, pairs: list):
        """The chosen rows, then the rejected rows: prompt + response, loss on the response."""
        examples = [Example(self.prompt(p), index=p.index, extra={"response": r})
                    for which in ("chosen", "rejected") for p in pairs for r in [getattr(p, which)]]
        return sft_batch(self.module.model.tokenizer, examples, self.gen, "response",
                         self.method.max_completion_tokens)

    def reference_logps(self, pairs: list, batch) -> torch.Tensor:
        """(2B,) the reference's log-probs of the batch's rows: computed the first time a pair is
        seen, then kept (the reference does not change)."""
        todo = [i for i, p in enumerate(pairs) if id(p) not in self._reference_logps]
        if todo:
            rows = torch.tensor(todo + [len(pairs) + i for i in todo])
            part = type(batch)(*(t[rows] for t in (batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                                   batch.completion_mask, batch.loss_mask)))
            with self.reference.active():
                logps = sequence_logps(self.module.model, part, mean=self.method.loss_type == "ipo").tolist()
            for j, i in enumerate(todo):
                self._reference_logps[id(pairs[i])] = (logps[j], logps[len(todo) + j])
        kept = [self._reference_logps[id(p)] for p in pairs]
        return torch.tensor([c for c, _ in kept] + [r for _, r in kept])

    def inputs(self, pairs: list, epoch: int, step: int, device) -> tuple[DPOInputs, dict]:
        batch = self.batch(pairs).to(device)
        return DPOInputs(batch, self.reference_logps(pairs, batch), self.module, epoch, step), \
            {"truncated": batch.truncated}

    @torch.no_grad()
    def evaluate(self, pairs: list) -> tuple[dict, list[dict]]:
        start, policy = time.perf_counter(), self.module
        was_training = policy.training
        policy.eval()
        size, rows, losses = self.config.train.eval_batch, [], []
        sums = {"rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/accuracies": 0.0, "rewards/margins": 0.0}
        for b in range(0, len(pairs), size):
            chunk = pairs[b:b + size]
            batch = self.batch(chunk).to(policy.model.device)
            reference = self.reference_logps(chunk, batch).to(policy.model.device)
            chosen, rejected = sequence_logps(policy.model, batch, mean=self.method.loss_type == "ipo").chunk(2)
            loss, metrics = dpo_loss(chosen, rejected, *reference.chunk(2), self.method)
            losses += loss.tolist()
            for key in sums:
                sums[key] += metrics[key] * len(chunk)
            margin = self.method.beta * ((chosen - reference[:len(chunk)]) - (rejected - reference[len(chunk):]))
            rows += [{"index": p.index, "prompt": self.prompt(p), "chosen": p.chosen, "rejected": p.rejected,
                      "loss": float(x), "reward_margin": float(m)} for p, x, m in zip(chunk, loss, margin)]
        policy.train(was_training)
        metrics = {f"eval_{k}": v / len(pairs) for k, v in sums.items()}
        metrics.update({"eval_loss": sum(losses) / len(losses), "eval_runtime": time.perf_counter() - start})
        return metrics, rows

    def report(self, run, before_rows, after_rows) -> None:
        write_json(run.path / "data.json", self.data_info)
