"""softprompt: tune soft prompts on frozen language and embedding models."""

from .adapters import (
    ConditionalPromptConfig,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    load_adapter,
    save_adapter,
)
from .api import TrainResult, run_pipeline, train
from .backbones import ALIASES, Backbone, load_backbone
from .errors import (
    AdapterLoadError,
    ConfigError,
    DataError,
    ModelLoadError,
    SoftPromptError,
)
from .generation import GenerationConfig, GenerationOutput, generate
from .model import SoftPromptModel

__version__ = "0.1.0"

__all__ = [
    "ALIASES", "AdapterLoadError", "Backbone", "ConditionalPromptConfig", "ConfigError", "DataError",
    "GenerationConfig", "GenerationOutput", "LoRAConfig", "ModelLoadError", "PrefixTuningConfig",
    "PromptTuningConfig", "SoftPromptError", "SoftPromptModel", "generate", "load_adapter", "load_backbone",
    "run_pipeline", "save_adapter", "train", "TrainResult",
]
