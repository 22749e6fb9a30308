"""From a config or a finished run to the models it trained: the adapter (fresh, or from
``init_from``), the classifier a config asks for, and a finished run loaded back as a classifier
or a comparative reward model (its config read from the run folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..adapters import read_saved_adapter
from ..errors import AdapterLoadError, ConfigError, SoftPromptError
from ..experiment import ExperimentConfig
from ..modeling.backbones import load_backbone
from ..modeling.classifiers import EmbeddingClassifier, VerbalizerClassifier, load_head
from ..modeling.model import SoftPromptModel, resolve_adapter_dir, resolve_run_path
from ..modeling.precision import default_device
from ..modeling.reward_model import PairwiseRewardModel
from ..tasks import get_task
from .folder import RunFolder


def task_of(config):
    task = get_task(config.task.name)
    changes = {}
    if config.task.template:
        changes["template"] = config.task.template
    if config.task.label_words:
        changes["label_words"] = config.task.label_words
    return dataclasses.replace(task, **changes) if changes else task


def classifier_kind(config, backbone) -> str:
    if config.classifier != "auto":
        return config.classifier
    return "verbalizer" if backbone.is_causal and backbone.pooling is None else "embedding"


def adapter_model(config, backbone) -> SoftPromptModel:
    """The backbone with the config's adapter: freshly initialised, or from ``config.init_from``."""
    model = SoftPromptModel.from_backbone(backbone, config.adapter_config())
    if config.init_from:
        init_adapter_from(model.adapter, config.init_from, backbone)
    return model


def init_adapter_from(adapter, source: str, backbone) -> None:
    """Copy the adapter weights of run folder / adapter directory ``source`` into ``adapter``
    (same adapter type and size), e.g. an SFT stage's prompt as the start of an RL stage."""
    meta, weights = read_saved_adapter(resolve_adapter_dir(source), backbone)  # checks it fits this backbone
    if meta["adapter_type"] != adapter.config.adapter_type:
        raise AdapterLoadError(f"init_from={source}: it holds a {meta['adapter_type']} adapter, this run "
                               f"trains a {adapter.config.adapter_type} one")
    adapter.load_adapter_state_dict(weights, f"init_from={source}")
    if meta.get("backbone_layers"):
        import logging

        logging.getLogger("softprompt").warning(
            "init_from=%s also holds trained transformer blocks %s: only its adapter is loaded, the blocks start "
            "from the backbone's weights", source, meta["backbone_layers"].get("layers"))


def config_backbone(config, device=None, **kw):
    """The config's frozen backbone (``model.name``) in ``model.dtype`` on ``device`` (default: the
    GPU when there is one, else the CPU; ``auto`` resolves for that device)."""
    return load_backbone(config.model.name, dtype=config.model.dtype, device=device or default_device(), **kw)


def run_model(path: str | Path, config=None, device=None) -> SoftPromptModel:
    """A finished run's SoftPromptModel (best checkpoint) with its backbone in the run's
    ``model.dtype`` on ``device`` (default: the GPU when there is one, else the CPU); ``config``:
    the run's config when the caller has read it already."""
    if config is None:
        run = RunFolder(resolve_run_path(path))
        config = run.read_config() if run.has_config else ExperimentConfig()
    return SoftPromptModel.from_pretrained(path, dtype=config.model.dtype, device=device or default_device())


def build_classifier(config, task, backbone=None, device=None):
    backbone = backbone or config_backbone(config, device)
    return build_classifier_for(config, task, adapter_model(config, backbone))


def build_classifier_for(config, task, model: SoftPromptModel):
    """The classifier the config asks for, around an existing SoftPromptModel."""
    kind = classifier_kind(config, model.backbone)
    if kind == "verbalizer":
        if task.regression:
            values = [float(v) for v in range(6)]
            return VerbalizerClassifier(model, [[str(int(v))] for v in values], values=values)
        return VerbalizerClassifier(model, task.label_words)
    return EmbeddingClassifier(model, max(task.num_labels, 1), pooling=config.pooling, regression=task.regression)


def load_trained_classifier(adapter: str | Path | None, task_name: str | None = None, model: str | None = None,
                            sp_model: SoftPromptModel | None = None, **load_kw):
    """(classifier, task, config) from a run folder or adapter directory, or the base ``model`` alone.

    A run folder brings its config: the task's template and label words, and the embedding
    classifier's head. ``task_name`` (default: the run's task) picks the task to score.
    ``load_kw`` (``dtype``, ``device``) go to :func:`load_backbone`.
    """
    adapter = resolve_run_path(adapter) if adapter is not None else None
    run = RunFolder(adapter) if adapter is not None else None
    config = run.read_config() if run is not None and run.has_config else ExperimentConfig()
    if sp_model is None:
        sp_model = (SoftPromptModel.from_pretrained(adapter, backbone=model, **load_kw) if adapter is not None
                    else SoftPromptModel(load_backbone(model or config.model.name, **load_kw)))
    task = get_task(task_name or config.task.name)
    if task.name == config.task.name:
        task = task_of(config)  # the run's own template and label words
    classifier = build_classifier_for(config, task, sp_model)
    if classifier.head_state():
        if adapter is None or task.name != config.task.name:
            raise SoftPromptError(f"an embedding classifier's head was trained for {config.task.name!r}; "
                                  f"it cannot score {task.name!r}")
        load_head(classifier, resolve_adapter_dir(adapter))
    return classifier, task, config


def build_reward_model(config, model) -> PairwiseRewardModel:
    """Pooling: ``config.pooling``, else the model card's, else last token (decoders) or mean."""
    return PairwiseRewardModel(model, pooling=config.pooling, max_length=config.preferences.max_length)


def load_reward_model(run: str | Path, model: str | None = None, config=None, **load_kw) -> PairwiseRewardModel:
    """A trained reward model from its run folder (best checkpoint) or adapter directory;
    ``config``: the run's config when the caller has already read it; ``load_kw`` (``dtype``,
    ``device``) go to :func:`load_backbone`."""
    path = resolve_run_path(run)
    config = config if config is not None else RunFolder(path).read_config()
    if not config.is_preference:
        raise ConfigError(f"{path} is a {config.method_name!r} run, not a reward model (reward_pairwise)")
    rm = build_reward_model(config, SoftPromptModel.from_pretrained(path, backbone=model, **load_kw))
    load_head(rm, resolve_adapter_dir(path))
    return rm.eval()
