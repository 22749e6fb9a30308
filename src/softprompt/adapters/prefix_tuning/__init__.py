from .config import PrefixTuningConfig
from .model import PrefixTuning

__all__ = ["PrefixTuning", "PrefixTuningConfig"]
