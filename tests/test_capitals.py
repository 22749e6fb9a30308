"""The capitals task: a verifiable generation task shipped with the package (polychromic's test bed
where Pass@k can move), its answer_match reward and eval-gen's contains verifier, checked by hand."""

import pytest

from softprompt.commands.eval_gen import make_verifier
from softprompt.errors import ConfigError, DataError
from softprompt.metrics.answers import contains_answer
from softprompt.rewards import RewardContext, RewardSet
from softprompt.tasks.data import Example
from softprompt.tasks.prompts import PromptsSection, load_prompts


@pytest.mark.parametrize("text,answers,expected", [
    ("The capital of France is Paris.", ["Paris"], True),
    ("paris!", "Paris", True),
    ("It is Port au Prince, of course", ["Port-au-Prince"], True),  # punctuation is a space on both sides
    ("The capital is N'Djamena.", ["N'Djamena", "Ndjamena"], True),
    ("I think Ndjamena", ["N'Djamena", "Ndjamena"], True),  # another accepted spelling
    ("Kiev, or Kyiv today", ["Kyiv", "Kiev"], True),
    ("Parisian cafes are nice", ["Paris"], False),  # whole words only
    ("The capital of Bolivia is Santa Cruz", ["Sucre", "La Paz"], False),
    ("La Paz", ["Sucre", "La Paz"], True),
    ("", ["Paris"], False),
    ("anything", [""], False),  # an empty answer never matches
])
def test_contains_answer_by_hand(text, answers, expected):
    assert contains_answer(text, answers) is expected


def test_capitals_prompts_carry_their_answers_and_one_split_for_every_seed():
    s = PromptsSection(source="capitals", num_train=500, num_eval=20)
    train, evaluation = load_prompts(s, seed=0)
    assert len(train) + len(evaluation) == 116 and len(evaluation) == 20
    again = load_prompts(s, seed=3)
    assert [e.text for e in again[1]] == [e.text for e in evaluation]  # held-out countries: the same for any seed
    assert not {e.text for e in train} & {e.text for e in evaluation}
    france = next(e for e in train + evaluation if e.extra["country"] == "France")
    assert france.text == "What is the capital of France? Answer with the city name only."
    assert france.extra["answer"] == "Paris" and france.extra["answers"] == ["Paris"]
    ukraine = next(e for e in train + evaluation if e.extra["country"] == "Ukraine")
    assert ukraine.extra["answers"] == ["Kyiv", "Kiev"]
    worded = load_prompts(PromptsSection(source="capitals", template="Capital of {country}?", num_eval=4), seed=0)
    assert all(e.text.startswith("Capital of ") for e in worded[0])
    assert len(load_prompts(PromptsSection(source="capitals", num_train=10, num_eval=4), seed=0)[0]) == 10


def test_answer_match_reward_and_contains_verifier():
    rewards = RewardSet.from_config([{"name": "answer_match"}], RewardContext())
    examples = [Example(text="q", index=0, extra={"answers": ["Paris"]}),
                Example(text="q", index=1, extra={"answers": ["Kyiv", "Kiev"]})]
    total, _ = rewards(["q", "q"], ["It is Paris.", "Moscow"], examples)
    assert total.tolist() == [1.0, 0.0]
    verify, name = make_verifier("contains", has_judge=False)
    assert name == "contains"
    assert verify(examples[1], "kiev", 0.0, None) and not verify(examples[0], "Lyon", 0.0, None)
    with pytest.raises(DataError, match="has no 'answers' column"):
        verify(Example(text="q", index=5), "Paris", 0.0, None)
    with pytest.raises(ConfigError, match="has no 'answers' field"):
        rewards(["q"], ["Paris"], [Example(text="q", index=5)])
