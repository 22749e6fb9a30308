"""What the one trainer trains on: labelled examples (classification), preference pairs
(reward models) or prompts (RL).

A workload turns a batch of examples into the objectives' inputs, evaluates, and writes its
reports. The trainer's loop (optimizer, schedule, checkpoints, early stopping) is the same.
"""

from __future__ import annotations

import time

import torch

from ..objectives import StepInputs
from .evaluation import evaluate, make_batch


def count_overlong(tokenizer, texts: dict[str, list[str]], limit: int, key: str, what: str) -> dict:
    """How many of each split's texts are longer than ``limit`` tokens (they get truncated); one
    warning with the counts, and the counts for the run's ``data.json``."""
    import logging

    counts: dict = {"max_length": limit}
    for name, items in texts.items():
        lengths = [len(ids) for ids in tokenizer(items)["input_ids"]] if items else []
        counts.update({f"{name}_{what}": len(items), f"{name}_truncated": sum(n > limit for n in lengths),
                       f"{name}_longest_tokens": max(lengths, default=0)})
    cut = {name: counts[f"{name}_truncated"] for name in texts}
    if any(cut.values()):
        logging.getLogger("softprompt").warning(
            "%s longer than %s=%d tokens are truncated from the left: %s (longest: %d tokens)", what, key, limit,
            ", ".join(f"{n} of {counts[f'{name}_{what}']} {name}" for name, n in cut.items()),
            max(counts[f"{name}_longest_tokens"] for name in texts))
    return counts


class ClassificationWork:
    kind = "classification"
    evaluate_before = False

    def __init__(self, config, task, classifier):
        self.config, self.task, self.module = config, task, classifier
        self.main_metric = task.main_metric

    def prepare(self, objectives: dict, train: list) -> None:
        for objective in objectives.values():
            objective.prepare([e.label for e in train])

    def count_overlong(self, train: list, evaluation: list) -> dict:
        """Examples longer than ``task.max_length`` tokens (cut from the left), counted once."""
        self.data_info = count_overlong(self.module.tokenizer, {"train": [self.task.format(e) for e in train],
                                                                "eval": [self.task.format(e) for e in evaluation]},
                                        self.config.task.max_length, "task.max_length", "examples")
        return self.data_info

    def inputs(self, examples: list, epoch: int, step: int, device) -> tuple[StepInputs, dict]:
        batch = make_batch(self.module, self.task, examples, self.config.task.max_length)
        return StepInputs({k: v.to(device) for k, v in batch.items()}, self.module, epoch, step), {}

    def evaluate(self, examples: list) -> tuple[dict, list[dict]]:
        return evaluate(self.module, self.task, examples, self.config.train.eval_batch, self.config.task.max_length,
                        self.config.objectives()["mle"])

    def report(self, run, before_rows, after_rows) -> None:
        from ..storage import write_json

        if getattr(self, "data_info", None):
            write_json(run.path / "data.json", self.data_info)  # examples read, and how many were truncated


class PreferenceWork:
    """Preference pairs for a comparative reward model: chosen and rejected rows in one batch."""

    kind = "preference"
    evaluate_before = False
    main_metric = "pairwise_accuracy"

    def __init__(self, config, reward_model, data_info: dict | None = None):
        self.config, self.module, self.data_info = config, reward_model, data_info or {}

    def count_overlong(self, train: list, evaluation: list) -> dict:
        """Rows whose ``context [SEP] response`` exceeds ``preferences.max_length`` (the context's start goes)."""
        rm = self.module
        texts = {name: [rm.text(p.context, r) for p in pairs for r in (p.chosen, p.rejected)]
                 for name, pairs in (("train", train), ("eval", evaluation))}
        self.data_info.update(count_overlong(rm.tokenizer, texts, rm.max_length, "preferences.max_length", "rows"))
        return self.data_info

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def batch(self, pairs: list) -> dict:
        contexts = [p.context for p in pairs] * 2
        return self.module.batch(contexts, [p.chosen for p in pairs] + [p.rejected for p in pairs])

    def inputs(self, pairs: list, epoch: int, step: int, device) -> tuple[StepInputs, dict]:
        batch = {k: v.to(device) for k, v in self.batch(pairs).items()}
        return StepInputs(batch, self.module, epoch, step), {}

    @torch.no_grad()
    def evaluate(self, pairs: list) -> tuple[dict, list[dict]]:
        from ..objectives.pairwise import pairwise_loss

        start = time.perf_counter()
        was_training = self.module.training
        self.module.eval()
        size = max(1, self.config.train.eval_batch // 2)
        chosen, rejected = [], []
        for b in range(0, len(pairs), size):
            scores = self.module.scores(self.batch(pairs[b:b + size])).squeeze(-1).float().cpu()
            n = len(scores) // 2
            chosen.append(scores[:n])
            rejected.append(scores[n:])
        self.module.train(was_training)
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        diff = chosen - rejected
        runtime = time.perf_counter() - start
        metrics = {"eval_pairwise_accuracy": float((diff > 0).float().mean()),
                   "eval_loss": float(pairwise_loss(chosen, rejected)),
                   "eval_margin": float(diff.mean()),
                   "eval_runtime": runtime, "eval_samples_per_second": len(pairs) / runtime}
        rows = [{"index": p.index, "line": p.line, "context": p.context, "chosen": p.chosen, "rejected": p.rejected,
                 "score_chosen": float(c), "score_rejected": float(r), "correct": bool(c > r)}
                for p, c, r in zip(pairs, chosen, rejected)]
        return metrics, rows

    def report(self, run, before_rows, after_rows) -> None:
        from ..storage import write_json

        write_json(run.path / "data.json", self.data_info)  # files read, pairs used, rows skipped


class RLWork:
    """Rollouts with rewards; evaluation samples the held-out prompts with a fixed seed."""

    kind = "rl"
    evaluate_before = True  # "before" numbers come from the same evaluation as "after"
    main_metric = "reward"

    def __init__(self, config, policy, rewards, reference=None, judge=None, base_lm=None):
        self.config, self.module, self.rewards = config, policy, rewards
        self.method = config.method_config()
        self.reference, self.judge, self.base_lm = reference, judge, base_lm
        self.gen = config.generation.to_generation_config(group_size=self.method.group_size)
        self.values = policy.value_head is not None
        from ..tasks.conditions import conditioner_for

        self.conditioner = conditioner_for(config, policy.model.adapter)

    def condition(self, examples: list):
        return self.conditioner(examples) if self.conditioner is not None else None

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def inputs(self, examples: list, epoch: int, step: int, device):
        from .rollout import RLInputs, make_rollout

        ro = make_rollout(self.module, examples, self.gen, self.rewards, self.reference, values=self.values,
                          condition=self.condition(examples))
        valid = ro.valid
        logs = {"reward": float(ro.rewards[valid].mean()) if valid.any() else float("nan"),
                "reward_std": float(ro.rewards[valid].std()) if int(valid.sum()) > 1 else 0.0,
                "completion_length": float(ro.completion_mask.sum(1).float().mean()),
                "rewards_dropped": float(self.rewards.dropped)}
        for name, values in ro.reward_parts.items():
            finite = values[torch.isfinite(values)]
            logs[f"reward/{name}"] = float(finite.mean()) if len(finite) else float("nan")
        return RLInputs(ro, self.module, epoch, step), logs

    @torch.no_grad()
    def evaluate(self, examples: list) -> tuple[dict, list[dict]]:
        from ..metrics.diversity import distinct_n, set_metrics
        from ..rewards.models import completion_nll
        from .rollout import score

        start = time.perf_counter()
        policy = self.module
        was_training = policy.training
        policy.eval()
        cfg = self.config.generation.to_generation_config(group_size=self.config.generation.eval_samples,
                                                          seed=self.config.seed)
        condition = self.condition(examples) if policy.model.adapter is not None else None
        gen = policy.model.generate([e.text for e in examples], cfg, condition=condition)
        policy.train(was_training)
        expanded_prompts, expanded, total, parts = score(self.rewards, examples, gen)
        finite = torch.isfinite(total)
        metrics = {"eval_reward": float(total[finite].mean()) if finite.any() else float("nan")}
        for name, values in parts.items():
            metrics[f"eval_reward/{name}"] = float(values[torch.isfinite(values)].mean())
        judged = None
        if self.judge is not None:
            judged = torch.as_tensor(self.judge(expanded_prompts, gen.texts, expanded), dtype=torch.float)
            metrics["eval_judge_score"] = float(judged.mean())
            metrics["eval_judge_positive_rate"] = float((judged > 0.5).float().mean())
        metrics["eval_distinct_2"] = distinct_n(gen.texts, 2)
        if gen.group_size > 1:  # several samples per prompt: how different they are from each other
            metrics.update({f"eval_{k}": v for k, v in set_metrics(gen.groups()).items()})
        if self.base_lm is not None:  # perplexity under the base model, whatever trained in place
            with self.base_lm.untouched():
                nll, count = completion_nll(self.base_lm, expanded_prompts, gen.texts)
            metrics["eval_perplexity"] = float(torch.exp(nll.sum() / count.sum().clamp(min=1)))
        metrics["eval_completion_length"] = float(gen.completion_mask.sum(1).float().mean())
        runtime = time.perf_counter() - start
        metrics.update({"eval_runtime": runtime, "eval_samples_per_second": len(gen.texts) / runtime})
        rows = [{"index": expanded[i].index, "prompt": expanded_prompts[i],
                 **({"condition": self.conditioner.text_of(expanded[i])} if self.conditioner else {}),
                 "completion": gen.texts[i],
                 "reward": float(total[i]), **({"judge": float(judged[i])} if judged is not None else {}),
                 **{f"reward/{k}": float(v[i]) for k, v in parts.items()}} for i in range(len(gen.texts))]
        return metrics, rows

    def evaluate_base(self, examples: list) -> dict:
        """The same evaluation on the base model: no soft prompt, LoRA off, unfrozen blocks at
        their loaded weights (SoftPromptModel.untouched)."""
        with self.module.model.untouched():
            return self.evaluate(examples)[0]

    def report(self, run, before_rows, after_rows) -> None:
        from ..runs.reports import plot_curves, samples_table

        rows = run.read_jsonl("train_log.jsonl")
        parts = sorted({k for r in rows for k in r if k.startswith("reward/")})
        keys = ["reward"] + (parts if len(parts) > 1 else []) + ["loss"]  # one part is the total again
        plot_curves(rows, keys, run.path / "reward_curve.png", title=f"{self.config.method_name}: training reward")
        if before_rows and after_rows:
            samples_table(before_rows, after_rows, run.path / "samples.md")
        if getattr(self, "data_info", None):
            from ..storage import write_json

            write_json(run.path / "data.json", self.data_info)  # prompts read, and how many were cut
