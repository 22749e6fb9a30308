"""Experiment configs: one YAML per experiment, dotted ``key=value`` overrides, typed sections.

Resolution: the dataclass defaults, then the YAML (and its ``defaults:`` chain), then the
command-line overrides; every key is checked, so a typo fails with the closest key. The
seed's spelling ``method_cfg.x=...`` is accepted for ``method.x``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .adapters import make_config
from .config import apply_overrides, build, deep_merge, load_config, to_dict
from .errors import ConfigError
from .fields import hfield
from .objectives import Phase, Schedule
from .objectives.contrastive import ContrastiveConfig
from .objectives.label_reinforce import LabelReinforceConfig
from .objectives.mle import MLEConfig

ALIASES = {"method_cfg": "method"}


@dataclass
class TaskSection:
    name: str = hfield("sst2", "task name (sst2, cola, stsb, mrpc, rte, wnli)")
    data_dir: str | None = hfield("../shared/data/glue", "folder in the GLUE layout (<dir>/SST-2/train.tsv)")
    train_file: str | None = hfield(None, "CSV/TSV/JSONL training file instead of the GLUE folder")
    eval_file: str | None = hfield(None, "CSV/TSV/JSONL evaluation file instead of the GLUE folder")
    text_column: str = hfield("text", "text column of train_file/eval_file")
    text_pair_column: str | None = hfield(None, "second text column for pair tasks")
    label_column: str = hfield("label", "label column of train_file/eval_file")
    train_split: str = hfield("train", "split name of the training data")
    eval_split: str = hfield("dev", "split name of the evaluation data")
    max_train_examples: int | None = hfield(None, "use only the first N training examples (after shuffling)")
    max_eval_examples: int | None = hfield(None, "evaluate on the first N examples")
    max_length: int = hfield(128, "truncate prompts to this many tokens (from the left)")
    template: str | None = hfield(None, "override the task's template ({text}, {text_pair})")
    label_words: list[list[str]] | None = hfield(None, "override the task's label words, a list per class")


@dataclass
class MethodSection:
    name: Literal["mle", "ptcprl"] = hfield("mle", "mle: MLE only; ptcprl: MLE, then MLE + contrastive + RL")
    phase1_epochs: int = hfield(1, "ptcprl: epochs of MLE only before the combined phase")
    alpha: float = hfield(1.0, "ptcprl: weight of MLE in the combined phase")
    beta: float = hfield(0.1, "ptcprl: weight of the contrastive term")
    gamma: float = hfield(0.1, "ptcprl: weight of the RL term")
    k_negatives: int = hfield(4, "contrastive: mutated prompts per example")
    temperature: float = hfield(0.1, "contrastive: InfoNCE temperature")
    contrastive_dropout: float = hfield(0.1, "contrastive: dropout on the prompt for the positive view")
    mutations: list[str] = hfield(["noise", "shuffle", "drop"], "contrastive: mutations used for negatives")
    noise_std: float = hfield(1.0, "contrastive: noise std relative to the prompt's std")
    drop_fraction: float = hfield(0.5, "contrastive: fraction of virtual tokens dropped")
    rl_subset_size: int = hfield(8, "label_reinforce: examples per batch that get a sampled label")
    label_smoothing: float = hfield(0.0, "mle: label smoothing")
    num_virtual_tokens: int | None = hfield(None, "the seed's spelling of adapter.num_virtual_tokens")


@dataclass
class TrainSection:
    batch: int = hfield(8, "examples per optimizer step (before accumulation)")
    epochs: int = hfield(1, "passes over the training data")
    max_steps: int | None = hfield(None, "stop after this many optimizer steps")
    lr: float = hfield(3e-2, "learning rate of the adapter")
    head_lr: float | None = hfield(None, "learning rate of a classifier head (default: lr / 10)")
    weight_decay: float = hfield(0.0, "AdamW weight decay")
    warmup_ratio: float = hfield(0.06, "fraction of steps of linear warmup")
    scheduler: Literal["cosine", "linear", "constant"] = hfield("cosine", "learning-rate schedule after warmup")
    grad_accum: int = hfield(1, "micro-batches per optimizer step")
    max_grad_norm: float = hfield(1.0, "gradient clipping (0: off)")
    eval_every: int = hfield(0, "evaluate every N optimizer steps (0: at the end of each epoch)")
    eval_batch: int = hfield(32, "evaluation batch size")
    early_stopping_patience: int = hfield(0, "stop after N evaluations without improvement (0: off)")


@dataclass
class ExperimentConfig:
    model: str = hfield("smollm2-135m-instruct", "backbone: alias, directory, .gguf file or hub id")
    classifier: Literal["auto", "verbalizer", "embedding"] = hfield(
        "auto", "verbalizer (causal LM + label words) or embedding (pooled encoder + linear head)")
    pooling: str | None = hfield(None, "embedding classifier pooling: mean, cls, last (default: the model card's)")
    task: TaskSection = field(default_factory=TaskSection)
    adapter: dict[str, Any] = hfield({"type": "prompt_tuning", "num_virtual_tokens": 20, "init": "vocab"},
                                     "adapter type and its options")
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainSection = field(default_factory=TrainSection)
    seed: int = hfield(0, "seed for data order, init and sampling")
    output_dir: str = hfield("experiments", "root of the run folders")
    run_id: str | None = hfield(None, "run folder name (default: a timestamp)")

    # -- derived ---------------------------------------------------------------------------------
    def adapter_config(self):
        options = dict(self.adapter)
        kind = options.pop("type", None)
        if not kind:
            raise ConfigError("adapter.type is required (prompt_tuning, prefix_tuning, conditional_prompt, lora)")
        if self.method.num_virtual_tokens is not None:
            options["num_virtual_tokens"] = self.method.num_virtual_tokens
        return make_config(kind, options)

    def objectives(self) -> dict[str, object]:
        m = self.method
        configs: dict[str, object] = {"mle": MLEConfig(label_smoothing=m.label_smoothing)}
        if m.name == "ptcprl":
            configs["contrastive"] = ContrastiveConfig(
                k_negatives=m.k_negatives, temperature=m.temperature, dropout=m.contrastive_dropout,
                mutations=list(m.mutations), noise_std=m.noise_std, drop_fraction=m.drop_fraction)
            configs["label_reinforce"] = LabelReinforceConfig(rl_subset_size=m.rl_subset_size)
        return configs

    def schedule(self) -> Schedule:
        m = self.method
        if m.name == "mle":
            return Schedule([Phase({"mle": 1.0})])
        return Schedule([Phase({"mle": 1.0}, epochs=m.phase1_epochs),
                         Phase({"mle": m.alpha, "contrastive": m.beta, "label_reinforce": m.gamma})])


def resolve(name: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML <- overrides, then a typed, validated config."""
    raw = load_config(name, aliases=ALIASES)
    return from_dict(raw, overrides)


def from_dict(raw: dict, overrides: list[str] = ()) -> ExperimentConfig:
    base = to_dict(ExperimentConfig())
    merged = deep_merge(base, raw)
    if "adapter" in raw:  # the YAML's adapter replaces the default one, filled with its type's defaults
        merged["adapter"] = _with_adapter_defaults(raw["adapter"])
    merged = apply_overrides(merged, list(overrides), ALIASES)
    config = build(ExperimentConfig, merged)
    config.adapter_config()  # validate the adapter options now, not after the run folder exists
    config.objectives()
    return config


def _with_adapter_defaults(section: dict) -> dict:
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError("config key 'adapter' must be a mapping with a 'type'")
    options = {k: v for k, v in section.items() if k != "type"}
    defaults = make_config(section["type"], {}).to_dict()
    return {"type": section["type"], **defaults, **options}
