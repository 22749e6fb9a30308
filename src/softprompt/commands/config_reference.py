"""The configuration reference (docs/configuration.md), generated from the config dataclasses'
field help: ``softprompt config-reference > docs/configuration.md``. A test checks the
committed page is current."""

from __future__ import annotations

import dataclasses
import typing

from ..adapters import ADAPTERS
from ..config.fields import field_range
from ..experiment import ExperimentConfig
from ..experiment.aliases import METHOD_KEYS, SEED_KEYS
from ..experiment.methods import METHODS
from ..rewards import REWARDS
from ..rewards.base import RewardItem
from .stages import ACTIONS


def _type(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.replace("typing.", "").replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if hasattr(value, "config_tag"):  # a registered component (adapter, method): its name
        value = dict([value.config_tag()])
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return "`" + text.replace("|", "\\|") + "`"


def table(cls, prefix: str = "", skip: typing.Collection[str] = ()) -> list[str]:
    rows = ["| key | type | default | valid | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        help_text = " ".join(f.metadata.get("help", "").split()).replace("|", "\\|").replace("<", "&lt;")
        valid = field_range(f)
        valid = valid.short().replace("<", "&lt;") if valid is not None else ""
        rows.append(f"| `{prefix}{f.name}` | {_type(f)} | {_default(f)} | {valid} | {help_text} |")
    return rows


def _doc(obj) -> str:
    doc = obj.__doc__ or ""
    if doc.startswith(f"{obj.__name__}("):  # the dataclass's generated signature, not a description
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("<", "&lt;")


def reference() -> str:
    sections = {f.name for f in dataclasses.fields(ExperimentConfig)  # adapter and method have chapters below
                if f.name not in ("adapter", "method") and dataclasses.is_dataclass(
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)}  # type: ignore[misc]
    out = ["# Configuration reference", "",
           "Generated from the config dataclasses' help by `softprompt config-reference`; do not edit by hand.",
           "Every key can be set in a config YAML or overridden on the command line as `key=value`.", "",
           "## Top level", ""]
    out += table(ExperimentConfig, skip=sections)
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in sections:
            cls = type(f.default_factory())  # type: ignore[misc]
            out += ["", f"## `{f.name}`", "", _doc(cls) or f"The `{f.name}` section.", ""]
            out += table(cls, f"{f.name}.")
    out += ["", "## `adapter`: `adapter.type` and its options", ""]
    for name in ADAPTERS.names():
        cls = ADAPTERS.get(name).config_class
        out += [f"### `adapter.type: {name}`", "", _doc(cls), ""] + table(cls, "adapter.", skip=("type",)) + [""]
    out += ["## `method`: `method.name` and its options", ""]
    out += ["Older spellings are accepted and read as the key they spell (a saved `config.yaml` holds the "
            "key): `method_cfg.*` is `method.*`; "
            + ", ".join(f"`{old}` is `{new}`" for old, (new, _) in SEED_KEYS.items()) + ".", ""]
    for name in METHODS.names():
        cls = METHODS.get(name)
        out += [f"### `method.name: {name}`", "", _doc(cls), ""] + table(cls, "method.") + [""]
        if METHOD_KEYS.get(name):
            out += ["Older spellings, accepted: " + ", ".join(f"`method.{old}` (`method.{new}`)"
                                                            for old, new in METHOD_KEYS[name].items()) + ".", ""]
    out += ["## `rewards` (and `judge`): a list of `{name: ..., weight: ..., options}`", "",
            "Every item takes these keys, then its reward's own options (below):", ""]
    out += table(RewardItem) + [""]
    for name in REWARDS.names():
        reward = REWARDS.get(name)
        cls = getattr(reward, "config_class", None)
        out += [f"### `{name}`", "", _doc(reward), ""]
        out += (table(cls) if cls is not None and dataclasses.is_dataclass(cls) and dataclasses.fields(cls)
                else ["(no options)"]) + [""]
    out += _pipelines()
    return "\n".join(out).rstrip() + "\n"


def _pipelines() -> list[str]:
    import inspect

    out = ["## Presets", "",
           "A config may hold `presets: {NAME: [key=value, ...]}`; `softprompt train --config-name X --preset NAME`",
           "applies that preset's overrides before the command line's. Each source experiment has `paper`:",
           "the source's own model and sizes.", "",
           "## Multi-stage configs: `stages`", "",
           "A config with `stages` (and optionally `presets`, `output_dir`) is a pipeline: `softprompt train`",
           "runs its stages in order. A training stage has `name`, `config` (a config name, a YAML path or an",
           "inline mapping, `defaults:` allowed), optional `overrides` and `init_from` (an earlier stage: start",
           "the adapter from its best checkpoint). `${NAME}` in a stage's config is the run folder of earlier",
           "stage NAME. `STAGE.key=value` overrides one stage; other keys go to every training stage;",
           "`run_id=X` names the pipeline (started again with the same id, finished stages are kept).",
           "An action stage has `name`, `action` and the action's keys:", ""]
    for name in ACTIONS.names():
        fn = ACTIONS.get(name)
        params = [k for k in inspect.signature(fn).parameters if k not in ("pipe", "stage")]
        out += [f"### `action: {name}`", "", _doc(fn), "", "keys: " + ", ".join(f"`{k}`" for k in params), ""]
    return out
