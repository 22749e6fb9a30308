"""Objectives, chosen by name: ``mle``, ``contrastive``, ``label_reinforce``; and phase schedules."""

from . import contrastive, label_reinforce, mle  # noqa: F401  (registers them)
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs
from .schedule import Phase, Schedule

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "Phase", "Schedule", "StepInputs"]
