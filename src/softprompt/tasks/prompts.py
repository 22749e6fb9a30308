"""Prompt sources for RL: where the texts that the policy continues come from.

``sentence_splits``: sentences of a GLUE task (or a file) cut at a random token into a
prompt and its true continuation (RLPT), at least ``min_prompt_tokens`` and
``min_completion_tokens`` on each side; the continuation is the example's ``reference`` and the
row's ``score`` (a file column, or the sentence's class through ``label_scores``) scales rewards.
``prompts.conditions`` gives every training prompt one condition (seeded) and every held-out
prompt each condition in turn, in the ``condition`` field: what a conditional prompt reads.

``review_openings``: the first few words of SST-2 dev sentences when SST-2 is at hand
(``prompts.data_dir``, ``prompts.dataset`` or ``$SOFTPROMPT_DATA``, see :mod:`.sources`; it never
downloads, so the RL configs run offline; disjoint sets for training and evaluation), else a
built-in list of 226 movie-review openings written for this project. ``review_requests``: "Write a one-line movie
review of <topic>." over 400 built-in topics (20 genres x 20 subjects), where many different
answers are right: the Polychromic experiments' prompt set. ``file``: a .txt (one prompt per line),
.jsonl or .csv file with a prompt column. ``list``: prompts written in the config.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..config.fields import hfield
from ..config.registry import Registry
from ..errors import ConfigError, DataError
from ..modeling.generation import check_messages, parts_text
from .base import get_task
from .data import Example, detokenize
from .files import get_text, read_json_lines, read_rows, read_text, table_records
from .sources import find_source, read_split

PROMPT_SOURCES: Registry = Registry("prompt source")


@dataclass
class PromptsSection:
    source: str = hfield("review_openings", "review_openings, review_requests, sentence_splits, capitals, file or "
                                            "list")
    data_dir: str | None = hfield(None, "review_openings, sentence_splits: a GLUE-layout folder; unset: "
                                        "$SOFTPROMPT_DATA, else (sentence_splits) the hub's nyu-mll/glue or "
                                        "(review_openings, which never downloads) the built-in openings")
    dataset: str | None = hfield(None, "review_openings, sentence_splits: a Hugging Face dataset id or a "
                                       "save_to_disk folder instead of a GLUE folder")
    dataset_config: str | None = hfield(None, "the dataset's config (for nyu-mll/glue: the task by default)")
    file: str | None = hfield(None, "file: .txt (a prompt per line), .jsonl or .csv; a .jsonl prompt may be a "
                                    "conversation in TRL's format (a list of role/content messages, content text or "
                                    "[{type: text, text: ...}] parts; or a 'messages' field), which needs "
                                    "generation.chat=true")
    eval_file: str | None = hfield(None, "file: held-out prompts (default: the last num_eval of 'file')")
    column: str = hfield("prompt", "file: the column holding the prompt (.jsonl/.csv)")
    items: list[str] = hfield([], "list: the training prompts")
    eval_items: list[str] = hfield([], "list: held-out prompts (default: none, so the training prompts are "
                                       "evaluated, with a warning)")
    num_train: int = hfield(256, "training prompts (at most)", ge=1)
    num_eval: int = hfield(32, "held-out prompts scored before and after training", ge=1)
    min_words: int = hfield(3, "review_openings: shortest opening, in words", ge=1)
    max_words: int = hfield(6, "review_openings: longest opening, in words", ge=1)
    template: str = hfield("Write a one-line movie review of {topic}.", "review_requests: the request, with {topic}; "
                                                                        "capitals: with {country} (else its own)")
    task: str = hfield("cola", "sentence_splits: the GLUE task whose sentences are split (train: its train "
                               "split; held out: its dev split), unless 'file' is given")
    min_prompt_tokens: int = hfield(3, "sentence_splits: shortest prompt, in the policy's tokens", ge=1)
    min_completion_tokens: int = hfield(5, "sentence_splits: shortest true continuation, in tokens", ge=1)
    score_column: str | None = hfield(None, "sentence_splits with a file: the column with each row's score")
    label_scores: list[float] = hfield([0.0, 1.0], "sentence_splits from a task: the score of each class "
                                                   "(CoLA: unacceptable, acceptable)", finite=True)
    conditions: list[str] = hfield([], "one condition per training prompt (seeded); held-out prompts get each "
                                       "(e.g. [negative, positive] for a conditional prompt)")

    def __post_init__(self):
        if not self.min_words <= self.max_words:
            raise ConfigError(f"prompts.min_words={self.min_words}, max_words={self.max_words}: expected "
                              "1 <= min_words <= max_words")


def load_prompts(section: PromptsSection, seed: int = 0, tokenizer=None,
                 info: dict | None = None) -> tuple[list[Example], list[Example]]:
    """(train, eval) prompt examples; an empty list is an error naming the source. ``tokenizer``:
    a function returning the policy's tokenizer, for sources that count tokens. ``info``, a dict,
    receives where a source read its texts (``data_source``), for the run's ``data.json``."""
    source = PROMPT_SOURCES.get(section.source)
    if getattr(source, "needs_tokenizer", False):
        if tokenizer is None:
            raise ConfigError(f"prompts.source={section.source} counts tokens: give load_prompts a tokenizer")
        out = source(section, seed, tokenizer())
    else:
        out = source(section, seed)
    train, evaluation = out[:2]  # a source that reads a task's data also says from where
    if info is not None and len(out) > 2:
        info.update(out[2])
    where = section.file or section.source
    if not train:
        raise DataError(f"prompts from {where!r}: no training prompts")
    if not evaluation:
        raise DataError(f"prompts from {where!r}: no evaluation prompts")
    train, evaluation = train[:section.num_train], evaluation[:section.num_eval]
    if section.conditions:
        train, evaluation = with_conditions(train, evaluation, section.conditions, seed)
    return train, evaluation


def held_out_info(train: list[Example], evaluation: list[Example], where: str) -> dict:
    """What the run evaluates on, for its ``data.json``: the evaluation prompts and whether they are
    held out. Evaluation prompts that are also training prompts get a loud warning: their reward
    measures how well the prompt fits what it was trained on, not how it generalises."""
    import logging

    trained = {e.text for e in train}
    texts = list(dict.fromkeys(e.text for e in evaluation))  # a prompt repeated per condition counts once
    seen = sum(t in trained for t in texts)
    if seen:
        logging.getLogger("softprompt").warning(
            "prompts from %r: %d of the %d evaluation prompts are training prompts, so eval_reward (and before/"
            "after) measure fit, not generalisation; give held-out prompts (prompts.eval_items for a list, "
            "prompts.eval_file for a file)", where, seen, len(texts))
    return {"eval_held_out": seen == 0, "eval_prompts_in_training": seen, "eval_prompt_texts": texts}


def with_conditions(train: list[Example], evaluation: list[Example], conditions: list[str], seed: int):
    """Each training prompt gets one condition (balanced, seeded); each held-out prompt appears
    once per condition, so "condition met" is measured for every condition on the same prompts."""
    rng = random.Random(seed + 1)
    order = [conditions[i % len(conditions)] for i in range(len(train))]
    rng.shuffle(order)
    train = [dataclasses.replace(e, extra={**e.extra, "condition": c}) for e, c in zip(train, order)]
    evaluation = [dataclasses.replace(e, index=len(conditions) * e.index + j, extra={**e.extra, "condition": c})
                  for e in evaluation for j, c in enumerate(conditions)]
    return train, evaluation


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


def _task_source(s: PromptsSection, task: str):
    return find_source(task, data_dir=s.data_dir, dataset=s.dataset, dataset_config=s.dataset_config, key="prompts")


@PROMPT_SOURCES.register("review_openings")
def review_openings(s: PromptsSection, seed: int):
    rng = random.Random(seed)
    source = _task_source(s, "sst2")
    if source.origin != "default":  # SST-2 at hand (a folder or dataset named, or $SOFTPROMPT_DATA); never a download
        # the dev split holds whole sentences (train also holds phrases cut from them): its
        # openings are split into disjoint training and evaluation prompts
        items = _openings([e.text for e in read_split(source, "sst2", "dev")], s, rng)
        return items[s.num_eval:], items[:s.num_eval], {"data_source": {"sst2/dev": source.to_dict()}}
    lines = resources.files("softprompt").joinpath("data/review_openings.txt").read_text().splitlines()
    items = [Example(text=t.strip(), index=i) for i, t in enumerate(lines) if t.strip()]
    rng.shuffle(items)
    n_eval = min(s.num_eval, len(items) // 4)
    return items[n_eval:], items[:n_eval], {"data_source": "built-in review openings (no SST-2 folder or dataset "
                                                           "given, SOFTPROMPT_DATA unset)"}


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


CAPITALS_REQUEST = "What is the capital of {country}? Answer with the city name only."


@PROMPT_SOURCES.register("capitals")
def capitals(s: PromptsSection, seed: int):
    """Capital-city requests with a checkable answer (data/capitals.tsv, 116 countries): each example
    carries ``answer`` (the capital) and ``answers`` (every accepted spelling) for the ``answer_match``
    reward and eval-gen's ``contains`` verifier. ``prompts.template`` words the request when it holds
    {country}. One split for every run seed, as review_requests."""
    template = s.template if "{country}" in s.template else CAPITALS_REQUEST
    lines = resources.files("softprompt").joinpath("data/capitals.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]
    random.Random(0).shuffle(rows)
    items = [Example(text=template.replace("{country}", country), index=i,
                     extra={"country": country, "answer": spellings.split("|")[0], "answers": spellings.split("|")})
             for i, (country, spellings) in enumerate(rows)]
    n_eval = min(s.num_eval, len(items) // 2)
    return items[n_eval:][:s.num_train], items[:n_eval]


def _needs_tokenizer(fn):
    fn.needs_tokenizer = True
    return fn


@PROMPT_SOURCES.register("sentence_splits")
@_needs_tokenizer
def sentence_splits(s: PromptsSection, seed: int, tokenizer):
    """RLPT's prompts: each sentence cut at a random token, >= min_prompt_tokens before and
    >= min_completion_tokens after; shorter sentences are left out (and counted in the log)."""
    import logging

    if s.file:
        rows = read_prompt_file(Path(s.file), s.column)
        if s.score_column and any(s.score_column not in e.extra for e in rows):
            bad = next(e for e in rows if s.score_column not in e.extra)
            raise DataError(f"prompt file {s.file}: row {bad.index + 1} has no column {s.score_column!r}")
        scored = [(e.text, float(e.extra[s.score_column]) if s.score_column else 1.0) for e in rows]
        n_eval = min(s.num_eval, len(scored) // 4) or 1
        parts = {"train": scored[:-n_eval], "eval": scored[-n_eval:]}
        info = {}
    else:
        task = get_task(s.task)
        if len(s.label_scores) != max(task.num_labels, 1):
            raise ConfigError(f"prompts.label_scores={s.label_scores}: expected one score per class of "
                              f"{task.name} ({task.label_names})")
        source = _task_source(s, task.name)

        def scored_split(split):
            return [(detokenize(e.text), float(s.label_scores[int(e.label)])) for e in
                    read_split(source, task.name, split)]
        parts = {"train": scored_split("train"), "eval": scored_split("dev")}
        info = {"data_source": {f"{task.name}/train,dev": source.to_dict()}}
    out = {}
    for name, items in parts.items():
        rng = random.Random(f"{seed}-{name}")
        examples, short = [], 0
        for text, score in items:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < s.min_prompt_tokens + s.min_completion_tokens:
                short += 1
                continue
            cut = rng.randint(s.min_prompt_tokens, len(ids) - s.min_completion_tokens)
            prompt = tokenizer.decode(ids[:cut]).strip()
            reference = tokenizer.decode(ids[cut:]).strip()
            if prompt and reference:
                examples.append(Example(text=prompt, index=len(examples),
                                        extra={"reference": reference, "score": score, "sentence": text}))
        if short:
            logging.getLogger(__name__).info("sentence_splits: %d %s sentences shorter than %d tokens left out",
                                             short, name, s.min_prompt_tokens + s.min_completion_tokens)
        rng.shuffle(examples)
        out[name] = examples
    return out["train"], out["eval"], info


@PROMPT_SOURCES.register("list")
def from_list(s: PromptsSection, seed: int):
    items = [Example(text=t, index=i) for i, t in enumerate(s.items)]
    if not items:
        raise ConfigError("prompts.source=list needs prompts.items: a list of prompt texts")
    held = [Example(text=t, index=i) for i, t in enumerate(s.eval_items)]
    return items, held or items  # no held-out prompts: the training prompts (load_prompts' caller warns)


@PROMPT_SOURCES.register("file")
def from_file(s: PromptsSection, seed: int):
    if not s.file:
        raise ConfigError("prompts.source=file needs prompts.file")
    items = read_prompt_file(Path(s.file), s.column)
    if s.eval_file:
        return items, read_prompt_file(Path(s.eval_file), s.column)
    if len(items) < 2:  # nothing to hold out: evaluated on the training prompt (the caller warns)
        return items, items
    n_eval = min(s.num_eval, len(items) // 4) or 1
    return items[:-n_eval], items[-n_eval:]


def read_prompt_file(path: Path, column: str = "prompt") -> list[Example]:
    """Prompts of a .txt (one per line), .jsonl or .csv/.tsv file (column ``column``; other columns in ``extra``)."""
    import csv

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
    if path.suffix == ".jsonl" and any(isinstance(r.get(column), list) or (column not in r and "messages" in r)
                                       for _, r in records):
        return [conversation_example(path, line, r, column, i) for i, (line, r) in enumerate(records)]
    return [Example(text=get_text(path, line, r, column), index=i, extra={k: v for k, v in r.items() if k != column})
            for i, (line, r) in enumerate(records)]


def conversation_example(path: Path, line: int, record: dict, column: str, index: int) -> Example:
    """A prompt in TRL's conversational format: ``column`` (or ``messages``) holds a list of
    role/content messages (content text, or typed text parts). The policy continues the
    conversation (``extra["messages"]``; ``generation.chat`` must be on); the example's text, which
    rewards see as the prompt, is the last user message. Trailing assistant turns of a ``messages``
    record are its reference response (``extra["reference"]``), not part of the prompt; the whole
    conversation is ``extra["conversation"]`` (SFT trains on its assistant turns). A plain
    string among them is one user message."""
    key = column if column in record else "messages"
    if key not in record:
        raise DataError(f"{path}:{line}: no {column!r} (or 'messages') field; found {sorted(record)}")
    value = record[key]
    if isinstance(value, str) and value.strip():  # a plain prompt among conversations: one user turn
        value = [{"role": "user", "content": value}]
    try:
        messages = check_messages(value, where=f"{path}:{line}: {key!r}")
    except ConfigError as e:
        raise DataError(str(e)) from None
    extra = {k: v for k, v in record.items() if k != key}
    if key == "messages" and any(m["role"] == "assistant" for m in messages):
        extra["conversation"] = messages  # the whole of it, assistant turns too: what SFT learns
    if key == "messages":
        while messages and messages[-1]["role"] == "assistant":
            extra.setdefault("reference", parts_text(messages[-1]["content"]))
            messages = messages[:-1]
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise DataError(f"{path}:{line}: {key!r} has no user message to answer")
    return Example(text=parts_text(users[-1]["content"]).strip(), index=index, extra={**extra, "messages": messages})
