"""Rewards computed from the text alone: VADER sentiment, length, regex match."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..config.fields import hfield
from ..errors import ConfigError
from ..metrics.answers import contains_answer
from ..tasks.data import example_field
from .base import REWARDS, Reward


@dataclass
class LexiconSentimentConfig:
    target: Literal["positive", "negative"] = hfield("positive", "the sentiment rewarded")
    include_prompt: bool = hfield(False, "score prompt + completion instead of the completion alone")


@REWARDS.register("lexicon_sentiment")
class LexiconSentiment(Reward):
    """VADER's compound score in [-1, 1] (negated for target=negative); fully offline."""

    config_class = LexiconSentimentConfig

    def __init__(self, config, context):
        super().__init__(config, context)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise ConfigError("reward 'lexicon_sentiment' needs VADER: pip install vaderSentiment") from None
        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts, completions, examples):
        sign = 1.0 if self.config.target == "positive" else -1.0
        texts = [p + c for p, c in zip(prompts, completions)] if self.config.include_prompt else completions
        return [sign * self.analyzer.polarity_scores(t)["compound"] for t in texts]


@dataclass
class LengthConfig:
    target: int | None = hfield(None, "reward -|words - target| / target; None: the number of words", ge=1)
    unit: Literal["words", "chars"] = hfield("words", "count words or characters")



@REWARDS.register("length")
class Length(Reward):
    config_class = LengthConfig

    @property
    def nonnegative(self) -> bool:  # a count; the distance to a target is <= 0
        return self.config.target is None

    def __call__(self, prompts, completions, examples):
        sizes = [len(c.split()) if self.config.unit == "words" else len(c) for c in completions]
        t = self.config.target
        return [float(s) if t is None else -abs(s - t) / t for s in sizes]


@dataclass
class RegexMatchConfig:
    pattern: str = hfield("", "Python regular expression searched in the completion")
    full_match: bool = hfield(False, "require the whole completion (stripped) to match")
    ignore_case: bool = hfield(False, "case-insensitive match")

    def __post_init__(self):
        if not self.pattern:
            raise ConfigError("regex_match.pattern: expected a non-empty regular expression")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ConfigError(f"regex_match.pattern={self.pattern!r}: not a valid regular expression ({e})") from None


@REWARDS.register("regex_match")
class RegexMatch(Reward):
    """1.0 when the pattern matches, else 0.0."""

    config_class = RegexMatchConfig
    nonnegative = True

    def __init__(self, config, context):
        super().__init__(config, context)
        self.regex = re.compile(config.pattern, re.IGNORECASE if config.ignore_case else 0)

    def __call__(self, prompts, completions, examples):
        match = self.regex.fullmatch if self.config.full_match else self.regex.search
        return [1.0 if match(c.strip() if self.config.full_match else c) else 0.0 for c in completions]


@dataclass
class AnswerMatchConfig:
    field: str = hfield("answers", "the prompt example's field holding the accepted answer(s) (capitals: answers)")


@REWARDS.register("answer_match")
class AnswerMatch(Reward):
    """1.0 when the completion contains one of the example's accepted answers as whole words, else 0.0:
    a verifiable reward (the ``capitals`` prompt source carries ``answers``)."""

    config_class = AnswerMatchConfig
    nonnegative = True

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            answers = example_field(example, self.config.field)
            if answers is None:
                raise ConfigError(f"answer_match: prompt {getattr(example, 'index', '?')} has no "
                                  f"{self.config.field!r} field (the capitals source has 'answers')")
            out.append(1.0 if contains_answer(completion, answers) else 0.0)
        return out
