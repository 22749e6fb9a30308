"""softprompt: tune soft prompts on frozen language and embedding models.

The package is arranged in layers, each a folder that imports only the layers below it (docs/concepts.md,
"Map of the package"): config -> adapters -> modeling -> metrics -> tasks -> objectives -> experiment
-> runs -> rewards -> training -> commands; ``errors``, ``storage`` and ``hf_compat`` are imported by all.
"""

from . import _moved
from .adapters import (
    ConditionalPromptConfig,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    load_adapter,
    save_adapter,
)
from .api import TrainResult, run_pipeline, train
from .errors import (
    AdapterLoadError,
    ConfigError,
    DataError,
    ModelLoadError,
    SoftPromptError,
)
from .modeling.backbones import ALIASES, Backbone, load_backbone
from .modeling.generation import GenerationConfig, GenerationOutput, generate
from .modeling.model import SoftPromptModel

_moved.install()  # old module paths (softprompt.build, softprompt.model, ...) keep working

__version__ = "0.1.0"

__all__ = [
    "ALIASES", "AdapterLoadError", "Backbone", "ConditionalPromptConfig", "ConfigError", "DataError",
    "GenerationConfig", "GenerationOutput", "LoRAConfig", "ModelLoadError", "PrefixTuningConfig",
    "PromptTuningConfig", "SoftPromptError", "SoftPromptModel", "generate", "load_adapter", "load_backbone",
    "run_pipeline", "save_adapter", "train", "TrainResult",
]
