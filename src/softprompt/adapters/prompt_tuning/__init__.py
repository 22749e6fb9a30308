from .config import PromptTuningConfig
from .model import PromptTuning

__all__ = ["PromptTuning", "PromptTuningConfig"]
