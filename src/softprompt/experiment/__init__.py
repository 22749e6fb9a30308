"""An experiment's config: its typed sections and how a YAML file, presets and overrides resolve
into one (``config``); the other spellings keys are accepted in (``aliases``); methods, each a set
of objectives in phases with its declared capabilities (``methods``)."""

from .aliases import ALIASES, METHOD_KEYS, SEED_KEYS, seed_aliases
from .config import (
    ConditionSection,
    ExperimentConfig,
    GenerationSection,
    PreferencesSection,
    TaskSection,
    TrainSection,
    from_dict,
    preset_overrides,
    resolve,
)
from .methods import METHODS, Method

__all__ = [
    "ALIASES", "METHODS", "METHOD_KEYS", "SEED_KEYS", "ConditionSection", "ExperimentConfig", "GenerationSection",
    "Method", "PreferencesSection", "TaskSection", "TrainSection", "from_dict", "preset_overrides", "resolve",
    "seed_aliases",
]
