"""Objectives, chosen by name: ``mle``, ``contrastive``, ``label_reinforce``, ``grpo``, ``ppo``,
``ppo_single_step``, ``pairwise``,
``polychromic``, ``response_mle``, ``sft``, ``dpo``; and phase schedules."""

from . import contrastive, dpo, grpo, label_reinforce, mle, pairwise, polychromic, ppo, sft  # noqa: F401  (registers them)
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs
from .schedule import Phase, Schedule

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "Phase", "Schedule", "StepInputs"]
