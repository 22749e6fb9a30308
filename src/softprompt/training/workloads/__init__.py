"""What the one trainer trains on: labelled examples (classification), preference pairs
(reward models or DPO), prompts (RL) or prompts with responses (SFT).

A workload turns a batch of examples into the objectives' inputs, evaluates, and writes its
reports. The trainer's loop (optimizer, schedule, checkpoints, early stopping) is the same.
"""

from __future__ import annotations

from .base import count_overlong
from .classification import ClassificationWork
from .dpo import DPOWork
from .preference import PreferenceWork
from .rl import RLWork
from .sft import SFTWork

__all__ = ["ClassificationWork", "DPOWork", "PreferenceWork", "RLWork", "SFTWork", "count_overlong"]
