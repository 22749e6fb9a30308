"""Before any run folder: every model a config names can load on this machine.

:func:`check_models` runs :func:`softprompt.modeling.backbones.check_model_spec` on each model
spec of a resolved config (:func:`model_specs`), so a misspelt alias, a missing wheel or a hub id
that ``HF_HUB_OFFLINE`` keeps from downloading fails with one line naming the config key, before a
run (or a pipeline's first stage) creates its folder. It reads the file system only.
"""

from __future__ import annotations

import dataclasses

from ..adapters import read_adapter_meta
from ..errors import ModelLoadError, SoftPromptError
from ..modeling.backbones import check_model_spec
from ..modeling.model import resolve_adapter_dir
from ..rewards import REWARDS


def _recorded_backbone(run: str) -> str | None:
    """The backbone spec a run folder or adapter directory (``packaged:NAME`` too) records, or None
    when there is none yet (a pipeline's later stage) or it cannot be read (its loader says why)."""
    try:
        spec = read_adapter_meta(resolve_adapter_dir(run))["backbone"].get("spec")
    except (SoftPromptError, OSError, AttributeError):
        return None
    return spec if isinstance(spec, str) else None


def _reward_specs(key: str, item) -> list[tuple[str, str]]:
    """(key, spec) of the models a reward item loads: its ``model`` (or that key's default, e.g.
    embedding_cosine's minilm-l6), else the backbone its ``run`` records."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or item.get("name") not in REWARDS.names():
        return []  # building the reward names the problem
    fields = {f.name: f for f in dataclasses.fields(REWARDS.get(item["name"]).config_class)}
    model = item.get("model", fields["model"].default) if "model" in fields else None
    if isinstance(model, str):
        return [(f"{key}.model", model)]
    run = item.get("run")
    spec = _recorded_backbone(run) if isinstance(run, str) else None
    return [(f"{key}.run", spec)] if spec else []


def model_specs(config, rewards: bool = True) -> list[tuple[str, str]]:
    """(config key, model spec) of every model ``config`` loads by spec: the backbone; for an RL
    method its rewards' and judge's models (with ``rewards`` False, the judge's only), the sentence
    encoder of embedding diversity; a conditional prompt's condition encoder."""
    specs = [("model.name", config.model.name)]
    if config.is_rl:
        items = [(f"rewards[{i}]", item) for i, item in enumerate(config.rewards)] if rewards else []
        if config.judge:
            items.append(("judge", config.judge))
        for key, item in items:
            specs += _reward_specs(key, item)
        method = config.method
        if getattr(method, "diversity", None) == "embedding" and getattr(method, "diversity_weight", 0):
            specs.append(("method.embedding_model", method.embedding_model))
    if config.adapter.adapter_type == "conditional_prompt" and config.condition.encoder != "onehot":
        specs.append(("condition.encoder", config.condition.encoder))
    return list(dict.fromkeys(specs))


def check_models(config, where: str = "", rewards: bool = True) -> None:
    """Raise :class:`ModelLoadError` (one line: ``where``, the key, the spec, what to do) at the
    first model of ``config`` that cannot load here (see :func:`model_specs`)."""
    for key, spec in model_specs(config, rewards):
        try:
            check_model_spec(spec)
        except ModelLoadError as e:
            raise ModelLoadError(f"{where}{key}: {e}") from None
