"""Rewards for RL, chosen by name: ``lexicon_sentiment``, ``length``, ``regex_match``, ``classifier``,
``embedding_cosine``, ``perplexity``, ``reward_model``; composed by :class:`RewardSet` (or any Python callable)."""

from . import models, text  # noqa: F401  (registers them)
from .base import REWARDS, Reward, RewardContext, RewardError, RewardPart, RewardSet

__all__ = ["REWARDS", "Reward", "RewardContext", "RewardError", "RewardPart", "RewardSet"]
