from .config import LoRAConfig
from .model import LoRA

__all__ = ["LoRA", "LoRAConfig"]
