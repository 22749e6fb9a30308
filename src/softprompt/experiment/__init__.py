"""An experiment's config: its typed sections and how a YAML file, presets and overrides resolve
into one (``config``); methods, each a set of objectives in phases (``methods``)."""

from .config import (
    ALIASES,
    SEED_KEYS,
    ConditionSection,
    ExperimentConfig,
    GenerationSection,
    PreferencesSection,
    TaskSection,
    TrainSection,
    from_dict,
    preset_overrides,
    resolve,
    seed_aliases,
)

__all__ = [
    "ALIASES", "SEED_KEYS", "ConditionSection", "ExperimentConfig", "GenerationSection", "PreferencesSection",
    "TaskSection", "TrainSection", "from_dict", "preset_overrides", "resolve", "seed_aliases",
]
