"""Import paths from before the package was arranged in layers (issue 18) keep working:
``import softprompt.build`` gives :mod:`softprompt.training.assemble`, and so on. The modules'
own names are the new ones; this table is the whole of the compatibility layer."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "softprompt.io": "softprompt.storage",
    "softprompt.fields": "softprompt.config.fields",
    "softprompt.registry": "softprompt.config.registry",
    "softprompt.backbones": "softprompt.modeling.backbones",
    "softprompt.placement": "softprompt.modeling.placement",
    "softprompt.kernels": "softprompt.modeling.kernels",
    "softprompt.model": "softprompt.modeling.model",
    "softprompt.generation": "softprompt.modeling.generation",
    "softprompt.classifiers": "softprompt.modeling.classifiers",
    "softprompt.reward_model": "softprompt.modeling.reward_model",
    "softprompt.peft_interop": "softprompt.modeling.peft_interop",
    "softprompt.diversity": "softprompt.metrics.diversity",
    "softprompt.tasks.metrics": "softprompt.metrics.glue",
    "softprompt.tasks._files": "softprompt.tasks.files",
    "softprompt.prompts": "softprompt.tasks.prompts",
    "softprompt.conditions": "softprompt.tasks.conditions",
    "softprompt.methods": "softprompt.experiment.methods",
    "softprompt.reports": "softprompt.runs.reports",
    "softprompt.trainer": "softprompt.training.trainer",
    "softprompt.rollout": "softprompt.training.rollout",
    "softprompt.checkpoint": "softprompt.training.checkpoint",
    "softprompt.distributed": "softprompt.training.distributed",
    "softprompt.evaluation": "softprompt.training.evaluation",
    "softprompt.workloads": "softprompt.training.workloads",
    "softprompt.build": "softprompt.training.assemble",
    "softprompt.cli": "softprompt.commands.cli",
    "softprompt.pipeline": "softprompt.commands.stages",
    "softprompt.sweep": "softprompt.commands.sweep",
    "softprompt.gen_eval": "softprompt.commands.eval_gen",
    "softprompt.compare": "softprompt.commands.compare",
    "softprompt.convert": "softprompt.commands.convert_weights",
    "softprompt.reference": "softprompt.commands.config_reference",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and hands out the module that now holds its code."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its own name


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
