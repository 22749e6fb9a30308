"""Prompt sources for RL: where the texts that the policy continues come from.

``review_openings``: the first few words of SST-2 dev sentences when the GLUE folder exists
(disjoint sets for training and evaluation), else a built-in list of 226
movie-review openings written for this project. ``review_requests``: "Write a one-line movie
review of <topic>." over 400 built-in topics (20 genres x 20 subjects), where many different
answers are right: the Polychromic experiments' prompt set. ``file``: a .txt (one prompt per line),
.jsonl or .csv file with a prompt column. ``list``: prompts written in the config.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConfigError, DataError
from .fields import hfield
from .registry import Registry
from .tasks.data import Example, detokenize

PROMPT_SOURCES: Registry = Registry("prompt source")


@dataclass
class PromptsSection:
    source: str = hfield("review_openings", "review_openings, review_requests, file or list")
    data_dir: str | None = hfield("../shared/data/glue", "review_openings: GLUE folder with SST-2 (else built-in)")
    file: str | None = hfield(None, "file: .txt (a prompt per line), .jsonl or .csv")
    eval_file: str | None = hfield(None, "file: held-out prompts (default: the last num_eval of 'file')")
    column: str = hfield("prompt", "file: the column holding the prompt (.jsonl/.csv)")
    items: list[str] = hfield([], "list: the prompts")
    num_train: int = hfield(256, "training prompts (at most)")
    num_eval: int = hfield(32, "held-out prompts scored before and after training")
    min_words: int = hfield(3, "review_openings: shortest opening, in words")
    max_words: int = hfield(6, "review_openings: longest opening, in words")
    template: str = hfield("Write a one-line movie review of {topic}.", "review_requests: the request, with {topic}")

    def __post_init__(self):
        if self.num_train < 1 or self.num_eval < 1:
            raise ConfigError(f"prompts.num_train={self.num_train}, num_eval={self.num_eval}: expected >= 1 each")
        if not 1 <= self.min_words <= self.max_words:
            raise ConfigError(f"prompts.min_words={self.min_words}, max_words={self.max_words}: expected "
                              "1 <= min_words <= max_words")


def load_prompts(section: PromptsSection, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, eval) prompt examples; an empty list is an error naming the source."""
    train, evaluation = PROMPT_SOURCES.get(section.source)(section, seed)
    where = section.file or section.source
    if not train:
        raise DataError(f"prompts from {where!r}: no training prompts")
    if not evaluation:
        raise DataError(f"prompts from {where!r}: no evaluation prompts")
    return train[:section.num_train], evaluation[:section.num_eval]


# SST-2's train split also holds phrases cut from sentences; these first words mark most of them
_FRAGMENT_STARTS = {"to", "is", "are", "was", "of", "and", "but", "or", "that", "for", "with", "as", "in", "on",
                    "by", "at", "from", "than", "into", "be", "been", "has", "have", "had", "which", "who", "it's",
                    ",", "'s", "n't", "--", "-lrb-", "-rrb-", "("}


def _openings(sentences: list[str], s: PromptsSection, rng: random.Random) -> list[Example]:
    out, seen = [], set()
    for sent in sentences:
        words = sent.split()
        # whole sentences only, long enough to leave something to continue
        if len(words) < max(12, s.max_words + 3) or words[0].lower() in _FRAGMENT_STARTS:
            continue
        opening = detokenize(" ".join(words[:rng.randint(s.min_words, s.max_words)]))
        if opening.lower() not in seen:
            seen.add(opening.lower())
            out.append(Example(text=opening, index=len(out), extra={"source_sentence": sent}))
    rng.shuffle(out)
    return out


@PROMPT_SOURCES.register("review_openings")
def review_openings(s: PromptsSection, seed: int):
    rng = random.Random(seed)
    glue = Path(s.data_dir) / "SST-2" if s.data_dir else None
    if glue is not None and (glue / "train.tsv").exists() and (glue / "dev.tsv").exists():
        from .tasks import load_split

        # the dev split holds whole sentences (train also holds phrases cut from them): its
        # openings are split into disjoint training and evaluation prompts
        items = _openings([e.text for e in load_split("sst2", "dev", data_dir=s.data_dir)], s, rng)
        return items[s.num_eval:], items[:s.num_eval]
    lines = resources.files("softprompt").joinpath("data/review_openings.txt").read_text().splitlines()
    items = [Example(text=t.strip(), index=i) for i, t in enumerate(lines) if t.strip()]
    rng.shuffle(items)
    n_eval = min(s.num_eval, len(items) // 4)
    return items[n_eval:], items[:n_eval]


@PROMPT_SOURCES.register("review_requests")
def review_requests(s: PromptsSection, seed: int):
    if "{topic}" not in s.template:
        raise ConfigError(f"prompts.template={s.template!r}: expected a text with {{topic}}")
    lines = resources.files("softprompt").joinpath("data/review_topics.txt").read_text().splitlines()
    topics = [t.strip() for t in lines if t.strip() and not t.startswith("#")]
    random.Random(0).shuffle(topics)  # one split for every run seed: seeds of a sweep share their eval prompts
    items = [Example(text=s.template.replace("{topic}", t), index=i, extra={"topic": t}) for i, t in enumerate(topics)]
    n_eval = min(s.num_eval, len(items) // 4)
    return items[n_eval:], items[:n_eval]


@PROMPT_SOURCES.register("list")
def from_list(s: PromptsSection, seed: int):
    items = [Example(text=t, index=i) for i, t in enumerate(s.items)]
    if not items:
        raise ConfigError("prompts.source=list needs prompts.items: a list of prompt texts")
    return items, items


@PROMPT_SOURCES.register("file")
def from_file(s: PromptsSection, seed: int):
    if not s.file:
        raise ConfigError("prompts.source=file needs prompts.file")
    items = read_prompt_file(Path(s.file), s.column)
    if s.eval_file:
        return items, read_prompt_file(Path(s.eval_file), s.column)
    if len(items) < 2:
        return items, items
    n_eval = min(s.num_eval, len(items) // 4) or 1
    return items[:-n_eval], items[-n_eval:]


def read_prompt_file(path: Path, column: str = "prompt") -> list[Example]:
    """Prompts of a .txt (one per line), .jsonl or .csv/.tsv file (column ``column``; other columns in ``extra``)."""
    import csv

    from .tasks._files import (
        get_text,
        read_json_lines,
        read_rows,
        read_text,
        table_records,
    )

    text = read_text(path, "prompt file")
    if path.suffix == ".txt":
        return [Example(text=t.strip(), index=i) for i, t in enumerate(text.splitlines()) if t.strip()]
    if path.suffix == ".jsonl":
        records = read_json_lines(path, text)
    elif path.suffix in (".csv", ".tsv"):
        sep = "," if path.suffix == ".csv" else "\t"
        rows = read_rows(path, text, sep, csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE)
        if not rows:
            raise DataError(f"prompt file {path} is empty")
        records = table_records(path, rows[1:], rows[0][1], [column], "comma" if sep == "," else "tab")
    else:
        raise DataError(f"prompt file {path}: expected a .txt, .jsonl, .csv or .tsv file")
    return [Example(text=get_text(path, line, r, column), index=i, extra={k: v for k, v in r.items() if k != column})
            for i, (line, r) in enumerate(records)]
