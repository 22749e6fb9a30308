"""``softprompt eval-gen``: n samples per prompt from a trained run (or its base model), their
diversity (per prompt, averaged), Pass@k under a verifier, and the generations themselves.

Verifiers (``--verifier``): ``exact[:FIELD]`` (the normalised completion equals the prompt
file's FIELD, default ``answer``), ``contains[:FIELD]`` (one of the prompt's accepted answers,
default field ``answers``, occurs in the completion as whole words: the ``capitals`` prompts),
``regex:PATTERN`` (found in the completion), ``judge>=T``
(the run's judge), ``reward>=T`` (the run's total reward), or a Python callable
``f(example, completion, reward, judge) -> bool`` from the API.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError, DataError, SoftPromptError
from ..metrics.answers import contains_answer
from ..metrics.diversity import (
    distinct_n,
    encode_groups,
    normalise,
    pass_at_k,
    set_metrics,
)
from ..modeling.generation import GenerationConfig
from ..modeling.model import SoftPromptModel, resolve_run_path
from ..rewards import RewardContext, RewardSet
from ..rewards.base import make_part
from ..runs.folder import RunFolder, write_predictions
from ..runs.loading import run_model
from ..storage import write_json
from ..tasks.conditions import conditioner_for
from ..tasks.data import example_field
from ..tasks.prompts import load_prompts, read_prompt_file, with_conditions
from ..training.rollout import score

Verifier = Callable[[object, str, float, "float | None"], bool]


def parse_ks(text: str | Sequence[int], n: int) -> list[int]:
    """'1,5,10' -> [1, 5, 10]; 'all' -> 1..n (the whole Pass@k curve); each k must be 1 <= k <= n."""
    if isinstance(text, str) and text.strip().lower() == "all":
        return list(range(1, n + 1))
    try:
        ks = sorted({int(k) for k in (text.split(",") if isinstance(text, str) else text) if str(k).strip()})
    except ValueError:
        raise ConfigError(f"--k {text!r}: expected comma-separated integers, e.g. 1,5,10, or all") from None
    bad = [k for k in ks if not 1 <= k <= n]
    if not ks or bad:
        raise ConfigError(f"--k {text!r}: each k must be between 1 and --n ({n}); k > n has no unbiased estimate")
    return ks


def make_verifier(spec: str | Verifier | None, has_judge: bool) -> tuple[Verifier | None, str]:
    """(verifier, description). None when no spec is given and the run has no judge."""
    if callable(spec):
        return spec, getattr(spec, "__name__", "callable")
    if spec is None:
        if not has_judge:
            return None, "none"
        spec = "judge>=0.5"
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:"):])
        except re.error as e:
            raise ConfigError(f"--verifier {spec!r}: not a regular expression ({e})") from None
        return (lambda ex, text, reward, judge: pattern.search(text) is not None), spec
    if spec == "exact" or spec.startswith("exact:"):
        field = spec.partition(":")[2] or "answer"

        def exact(ex, text, reward, judge):
            target = (ex.extra or {}).get(field)
            if target is None:
                raise DataError(f"--verifier {spec}: prompt {ex.index} ({ex.text[:40]!r}) has no {field!r} column")
            return normalise(text) == normalise(str(target))
        return exact, spec
    if spec == "contains" or spec.startswith("contains:"):
        field = spec.partition(":")[2] or "answers"

        def contains(ex, text, reward, judge):
            answers = example_field(ex, field)
            if answers is None:
                raise DataError(f"--verifier {spec}: prompt {ex.index} ({ex.text[:40]!r}) has no {field!r} column")
            return contains_answer(text, answers)
        return contains, spec
    m = re.fullmatch(r"(judge|reward)\s*>=\s*(-?[0-9.]+(?:e-?[0-9]+)?)", spec)
    if m:
        source, threshold = m.group(1), float(m.group(2))
        if source == "judge" and not has_judge:
            raise ConfigError(f"--verifier {spec}: this run has no judge (config key 'judge')")
        if source == "judge":
            return (lambda ex, text, reward, judge: judge is not None and judge >= threshold), spec
        return (lambda ex, text, reward, judge: reward >= threshold), spec
    raise ConfigError(f"--verifier {spec!r}: expected exact[:FIELD], contains[:FIELD], regex:PATTERN, judge>=T or "
                      "reward>=T")


@dataclass
class GenEvalResult:
    metrics: dict
    rows: list[dict]


@torch.no_grad()
def evaluate_generations(model, examples: list, gen_config, rewards=None, judge=None, verifier=None,
                         ks: Sequence[int] = (1,), embedding_model: str | None = "minilm-l6",
                         prompts_per_batch: int = 8, progress: bool = True,
                         max_embed_per_set: int | None = None, conditioner=None, generate=None) -> GenEvalResult:
    """Sample ``gen_config.group_size`` completions per example and measure them.

    ``conditioner`` (a :class:`softprompt.conditions.Conditioner`, for a conditional prompt):
    each example's condition vector feeds generation while the model has its adapter, and
    every row records the example's condition (with the adapter off too), as training's
    evaluation does. ``generate``: what samples (a VLLMEngine's ``generate``; default the model's).
    """
    from rich.progress import Progress

    n = gen_config.group_size
    check, verifier_name = make_verifier(verifier, judge is not None)
    ks = parse_ks(ks, n)
    rows, groups = [], []
    start = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"sampling {n} per prompt", total=len(examples))
        for b in range(0, len(examples), prompts_per_batch):
            batch = examples[b:b + prompts_per_batch]
            gen = (generate or model.generate)([e.text for e in batch], gen_config,
                                               condition=_condition(model, conditioner, batch))
            if rewards is not None:
                prompts, expanded, total, parts = score(rewards, batch, gen)
            else:
                prompts = [batch[i // n].text for i in range(len(gen.texts))]
                expanded = [batch[i // n] for i in range(len(gen.texts))]
                total, parts = torch.full((len(gen.texts),), float("nan")), {}
            judged = judge(prompts, gen.texts, expanded) if judge is not None else None
            for i, text in enumerate(gen.texts):
                ex = expanded[i]
                row = {"index": ex.index, "prompt": ex.text,
                       **({"condition": conditioner.text_of(ex)} if conditioner is not None else {}),
                       "sample": i % n, "completion": text,
                       "reward": float(total[i]), **{f"reward/{k}": float(v[i]) for k, v in parts.items()}}
                if judged is not None:
                    row["judge"] = float(judged[i])
                if check is not None:
                    row["correct"] = bool(check(ex, text, row["reward"], row.get("judge")))
                rows.append(row)
            groups += gen.groups()
            bar.update(job, advance=len(batch))
    gen_seconds = time.perf_counter() - start
    timings: dict[str, float] = {}
    embeddings = None
    if embedding_model:
        t = time.perf_counter()
        embeddings = encode_groups(groups, embedding_model, max_embed_per_set)
        timings["embedding_diversity"] = time.perf_counter() - t
    metrics: dict = set_metrics(groups, embeddings, timings)
    metrics["distinct_1"] = distinct_n([r["completion"] for r in rows], 1)  # all prompts' completions together
    metrics["distinct_2"] = distinct_n([r["completion"] for r in rows], 2)
    finite = [r["reward"] for r in rows if r["reward"] == r["reward"]]
    if finite:
        metrics["reward"] = sum(finite) / len(finite)
    if judge is not None:
        metrics["judge_score"] = sum(r["judge"] for r in rows) / len(rows)
        metrics["judge_positive_rate"] = sum(r["judge"] > 0.5 for r in rows) / len(rows)
    if check is not None:
        correct = [sum(r["correct"] for r in rows[j * n:(j + 1) * n]) for j in range(len(groups))]
        for k in ks:
            metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
    metrics.update({"num_prompts": len(groups), "n": n, "k": list(ks), "verifier": verifier_name,
                    "embedded_per_set": min(n, max_embed_per_set) if max_embed_per_set else n,
                    "generation_seconds": gen_seconds, "metric_seconds": timings})
    return GenEvalResult(metrics, rows)


def _condition(model, conditioner, batch: list):
    """The batch's condition vectors when the model's adapter reads one, else None."""
    adapter = model.adapter
    if conditioner is None or adapter is None or not adapter.needs_condition:
        return None
    return conditioner(batch)


def _with_run_conditions(config, examples: list, conditioner) -> list:
    """A prompt file's examples for a conditional run: as they are when they carry the condition
    field, else each one under every condition of ``prompts.conditions`` (as held-out prompts are)."""
    if conditioner is None or not config.prompts.conditions:
        return examples
    if any(example_field(e, conditioner.field) is not None for e in examples):
        return examples  # a missing field in some rows is the Conditioner's clear error
    return with_conditions([], examples, config.prompts.conditions, config.seed)[1]


def eval_gen_run(run: str, prompts: str | None = None, n: int = 10, ks: str = "1,5,10", verifier=None,
                 out: str | None = None, base: bool = False, max_prompts: int | None = None,
                 temperature: float | None = None, max_new_tokens: int | None = None, seed: int | None = None,
                 embedding_model: str | None = "minilm-l6", progress: bool = True,
                 max_embed_per_set: int | None = None, backend: str | None = None) -> tuple[dict, Path]:
    """``softprompt eval-gen``: load a run (its adapter, generation settings, rewards and judge),
    sample (with ``backend``: native or vllm; default the run's ``generation.backend``), measure,
    and write ``metrics.json`` and ``generations.jsonl`` to ``out``."""
    path = resolve_run_path(run)
    config = RunFolder(path).read_config()
    if not config.is_generative:
        raise SoftPromptError(f"{path}: eval-gen samples text; this run trained {config.method_name!r} "
                              "(not a generation method)")
    ks_list = parse_ks(ks, n)  # k > n fails before any model loads
    loaded: list = []

    def load_model() -> SoftPromptModel:  # early only for prompt sources that count tokens
        if not loaded:
            loaded.append(run_model(path, config))  # the run's model.dtype, on the GPU when there is one
        return loaded[0]
    if prompts:
        examples = read_prompt_file(Path(prompts))
        if not examples:
            raise DataError(f"prompt file {prompts}: no prompts")
    else:
        # the run's held-out prompts; RLPT's sentence_splits cut them with the policy's tokenizer
        examples = load_prompts(config.prompts, config.seed, lambda: load_model().tokenizer)[1]
    model = load_model()
    conditioner = conditioner_for(config, model.adapter, model.device)
    if prompts:
        examples = _with_run_conditions(config, examples, conditioner)
    examples = examples[:max_prompts] if max_prompts else examples
    off = model.untouched() if base else contextlib.nullcontext()  # base: the backbone as loaded, no adapter
    context = RewardContext(backbone=model.backbone, device=model.device, dtype=model.compute_dtype)
    rewards = RewardSet.from_config(config.rewards, context) if config.rewards else None
    judge = make_part(config.judge, 0, context).fn if config.judge else None
    gen = GenerationConfig.from_kwargs(
        config.generation.to_generation_config(group_size=n, seed=config.seed if seed is None else seed),
        **{k: v for k, v in (("temperature", temperature), ("max_new_tokens", max_new_tokens)) if v is not None})
    section = replace(config.generation, backend=backend or config.generation.backend)
    engine = section.engine(model, seed=config.seed)  # None: native
    try:
        with off:
            result = evaluate_generations(model, examples, gen, rewards, judge, verifier, ks_list, embedding_model,
                                          progress=progress, max_embed_per_set=max_embed_per_set,
                                          conditioner=conditioner, generate=engine.generate if engine else None)
    finally:
        if engine is not None:
            engine.close()
    out_dir = Path(out) if out else path / ("eval_gen_base" if base else "eval_gen")
    out_dir.mkdir(parents=True, exist_ok=True)
    result.metrics.update({"run": str(path), "base_model": base, "prompts": prompts or "the run's held-out prompts",
                           "temperature": gen.temperature, "max_new_tokens": gen.max_new_tokens})
    write_json(out_dir / "metrics.json", result.metrics)
    write_predictions(result.rows, out_dir / "generations.jsonl")
    return result.metrics, out_dir
