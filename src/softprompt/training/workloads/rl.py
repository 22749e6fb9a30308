"""Prompts for RL: rollouts with rewards, and evaluation that samples the held-out prompts with a fixed seed."""

from __future__ import annotations

import time

import torch

from ...metrics.diversity import distinct_n, set_metrics
from ...modeling.scoring import completion_nll
from ...runs.reports import plot_curves, samples_table
from ...storage import write_json
from ...tasks.conditions import conditioner_for
from ...tasks.data import generation_input
from ..rollout import RLInputs, make_rollout, score


class RLWork:
    """Rollouts with rewards; evaluation samples the held-out prompts with a fixed seed."""

    kind = "rl"
    evaluate_before = True  # "before" numbers come from the same evaluation as "after"
    main_metric = "reward"

    def __init__(self, config, policy, rewards, reference=None, judge=None, base_lm=None, engine=None):
        self.config, self.module, self.rewards = config, policy, rewards
        self.engine = engine  # a VLLMEngine (generation.backend: vllm) or None: the policy's own generation
        self.method = config.method_config()
        self.reference, self.judge, self.base_lm = reference, judge, base_lm
        self.gen = config.generation.to_generation_config(group_size=self.method.samples_per_prompt)
        self.values = policy.value_head is not None

        self.conditioner = conditioner_for(config, policy.model.adapter, policy.model.device)
        targets = getattr(policy.model.adapter, "condition_targets", None)
        if self.conditioner is not None and targets and not config.init_from:  # each condition on its own prompt
            names = list(targets)
            policy.model.adapter.fit_conditions(dict(zip(names, self.conditioner.vectors(names))))

    def condition(self, examples: list):
        return self.conditioner(examples) if self.conditioner is not None else None

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def inputs(self, examples: list, epoch: int, step: int, device):
        ro = make_rollout(self.module, examples, self.gen, self.rewards, self.reference, values=self.values,
                          condition=self.condition(examples), engine=self.engine,
                          is_cap=self.config.generation.importance_sampling_cap)
        valid = ro.valid
        logs = {"reward": float(ro.rewards[valid].mean()) if valid.any() else float("nan"),
                "reward_std": float(ro.rewards[valid].std()) if int(valid.sum()) > 1 else 0.0,
                "completion_length": float(ro.completion_mask.sum(1).float().mean()),
                "rewards_dropped": float(self.rewards.dropped)}
        for name, values in ro.reward_parts.items():
            finite = values[torch.isfinite(values)]
            logs[f"reward/{name}"] = float(finite.mean()) if len(finite) else float("nan")
        logs.update(ro.engine_stats)  # vllm: how far the engine's log-probs are from the trainer's
        entropy = bool(getattr(self.method, "entropy_coef", 0))  # PPO's entropy term: from the same forward
        return RLInputs(ro, self.module, epoch, step, with_entropy=entropy), logs

    @torch.no_grad()
    def evaluate(self, examples: list) -> tuple[dict, list[dict]]:
        start = time.perf_counter()
        policy = self.module
        was_training = policy.training
        policy.eval()
        cfg = self.config.generation.to_generation_config(group_size=self.config.generation.eval_samples,
                                                          seed=self.config.seed)
        condition = self.condition(examples) if policy.model.adapter is not None else None
        generate = self.engine.generate if self.engine is not None else policy.model.generate
        gen = generate([generation_input(e) for e in examples], cfg, condition=condition)
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
            if self.conditioner is not None:  # the judge reads each row's target: the rate it was met, per target
                targets = [self.conditioner.text_of(e) for e in expanded]
                for value in sorted(set(targets)):
                    met = [bool(j > 0.5) for j, t in zip(judged, targets) if t == value]
                    metrics[f"eval_condition_met/{value}"] = sum(met) / len(met)
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

    def close(self) -> None:
        """Stop the vLLM engine, if any (the trainer calls this when fit ends)."""
        if self.engine is not None:
            self.engine.close()

    def report(self, run, before_rows, after_rows) -> None:
        rows = run.read_jsonl("train_log.jsonl")
        parts = sorted({k for r in rows for k in r if k.startswith("reward/")})
        keys = ["reward"] + (parts if len(parts) > 1 else []) + ["loss"]  # one part is the total again
        plot_curves(rows, keys, run.path / "reward_curve.png", title=f"{self.config.method_name}: training reward")
        if before_rows and after_rows:
            samples_table(before_rows, after_rows, run.path / "samples.md")
        if getattr(self, "data_info", None):
            write_json(run.path / "data.json", self.data_info)  # prompts read, and how many were cut
