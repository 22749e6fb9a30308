from .config import ConditionalPromptConfig
from .model import ConditionalPrompt

__all__ = ["ConditionalPrompt", "ConditionalPromptConfig"]
