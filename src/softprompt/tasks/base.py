"""Task definitions: template, label words (verbalizer), metric, and the TASKS registry."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config.registry import Registry
from ..errors import ConfigError, DataError
from ..metrics.glue import METRICS
from .data import Example

_FIELDS = {"text", "text_pair"}


@dataclass
class Task:
    """What a task shows the model and how it is scored.

    ``template`` is a Python format string with ``{text}`` and optionally ``{text_pair}``;
    :meth:`format` fills it (braces inside the example's text are left alone).

    ``label_words[c]`` lists the words of class ``c``; several words per class are allowed
    (the verbalizer takes the log-sum-exp of their next-token logits). The words are stored
    plain, WITHOUT a leading space: they continue the formatted prompt, which ends right
    after a ``:``, so for BPE tokenizers (GPT-2, Llama, SmolLM) the caller should score
    ``" " + word`` (see :meth:`continuations`), while WordPiece tokenizers want the word as is.

    Regression tasks (STS-B) have ``num_labels=0``, ``regression=True`` and no label words.
    ``main_metric`` is the key of :meth:`compute_metrics`'s dict used for early stopping
    and for picking the best checkpoint.
    """

    name: str
    num_labels: int
    label_words: list[list[str]]
    template: str
    metric: str
    main_metric: str
    regression: bool = False
    label_names: list[str] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        except ValueError as e:
            raise ConfigError(f"{where}: template {self.template!r} is not a valid format string ({e})") from None
        if "text" not in names or names - _FIELDS:
            raise ConfigError(f"{where}: template {self.template!r} must use {{text}} and may use {{text_pair}}; "
                              f"found fields {sorted(names)}")
        fn = METRICS.get(self.metric)
        keys = getattr(fn, "keys", ())
        if self.main_metric not in keys:
            raise ConfigError(f"{where}: main_metric {self.main_metric!r} is not computed by metric "
                              f"{self.metric!r}; expected one of {', '.join(keys)}")
        if self.regression:
            if self.num_labels != 0:
                raise ConfigError(f"{where}: a regression task has num_labels=0, found {self.num_labels}")
            return
        if self.num_labels < 2:
            raise ConfigError(f"{where}: a classification task needs num_labels >= 2, found {self.num_labels}")
        if len(self.label_words) != self.num_labels or not all(self.label_words):
            raise ConfigError(f"{where}: expected a non-empty list of label words for each of the "
                              f"{self.num_labels} classes, found {self.label_words!r}")
        seen: dict[str, int] = {}
        for c, words in enumerate(self.label_words):
            for w in words:
                if not w.strip() or w != w.strip():
                    raise ConfigError(f"{where}: label word {w!r} must be a plain word without surrounding spaces")
                if seen.setdefault(w, c) != c:
                    raise ConfigError(f"{where}: label word {w!r} is used by classes {seen[w]} and {c}")
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ConfigError(f"{where}: expected {self.num_labels} label names, found {self.label_names!r}")

    @property
    def is_pair(self) -> bool:
        return "{text_pair}" in self.template

    def format(self, example: Example) -> str:
        """The prompt for ``example``: the template with its text (and text pair) filled in."""
        if self.is_pair and example.text_pair is None:
            raise DataError(f"task {self.name!r} needs a text pair but example {example.index} has none "
                            "(set text_pair_column)")
        return self.template.format_map({"text": example.text, "text_pair": example.text_pair})

    def continuations(self, prefix: str = " ") -> list[list[str]]:
        """Label words as next-token continuations, e.g. ``" great"`` for BPE tokenizers."""
        return [[prefix + w for w in words] for words in self.label_words]

    def compute_metrics(self, gold: Sequence, pred: Sequence) -> dict[str, float]:
        return METRICS.get(self.metric)(gold, pred)

    def label_map(self) -> dict[str, int]:
        """Raw label strings this task accepts in a file: ``"0"``, ``"1"``, ... and the label names."""
        out = {str(i): i for i in range(self.num_labels)}
        out.update({n: i for i, n in enumerate(self.label_names)})
        return out


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (``SST-2`` and ``sst_2`` find ``sst2``); a typo gets a "did you mean" hint."""
    key = name.lower().replace("-", "").replace("_", "")
    return TASKS.get(key if name not in TASKS and key in TASKS else name)
