"""The project's own error types.

Every problem a user can cause (a bad model spec, a bad config value, a
corrupt file) raises a subclass of :class:`SoftPromptError` with a one-line
message that names the thing at fault and what was expected. The CLI prints
that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SoftPromptError(Exception):
    """Base class of every user-facing softprompt error."""


class ConfigError(SoftPromptError, ValueError):
    """A configuration key or value is invalid."""


class ModelLoadError(SoftPromptError):
    """A backbone could not be found or loaded."""


class AdapterLoadError(SoftPromptError):
    """A saved adapter is missing, corrupt, or does not fit the backbone."""


class DataError(SoftPromptError, ValueError):
    """An input file or row is malformed."""


def closest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class TrainingDiverged(SoftPromptError):
    """Too many consecutive steps had a NaN or infinite loss or gradient."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``checkpoints/last`` was saved at a step boundary; resume from it."""
