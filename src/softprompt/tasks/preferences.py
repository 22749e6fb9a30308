"""Preference data for reward models: readers, splits, and pairs built from a labelled set.

Two layouts are read from ``.xlsx`` (openpyxl), ``.csv`` and ``.jsonl`` files:

- the hardPrompt2softPrompt seed's: ``context_messages``, ``policy_response``,
  ``reference_response``, ``human_eval`` (0 = the policy's response is better, 1 = the
  reference's is better, 2 or 3 = no preference: the row is skipped and counted);
- the common one: ``prompt``, ``chosen``, ``rejected``.

``context_messages`` may be plain text, a JSON list of ``{role, content}`` messages, or the
same list as a Python literal (read with ``ast.literal_eval``, which runs no code). Every
problem is a one-line :class:`~softprompt.errors.DataError` naming the file and the row.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..storage import atomic_write
from . import files as F
from .data import detokenize

SEED_COLUMNS = ("context_messages", "policy_response", "reference_response", "human_eval")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
SKIP_LABELS = (2, 3)  # the seed's "no preference" codes


@dataclass
class PreferencePair:
    context: str  # may be empty
    chosen: str
    rejected: str
    index: int = 0  # position among the file's usable rows
    line: int = 0  # the row in the file (1-based, the header is line 1)
    extra: dict = field(default_factory=dict)


@dataclass
class PreferenceData:
    pairs: list[PreferencePair]
    path: Path
    layout: str  # "seed" or "pairs"
    skipped: int = 0  # rows with human_eval 2 or 3

    def summary(self) -> dict:
        return {"file": str(self.path), "layout": self.layout, "pairs": len(self.pairs), "skipped": self.skipped}


def read_preferences(path: str | Path) -> PreferenceData:
    """Every usable preference pair of ``path`` (.xlsx, .csv or .jsonl), in file order."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise DataError(f"{path}: no data rows; expected a row per preference with columns "
                        f"{F.quoted(SEED_COLUMNS)} or {F.quoted(PAIR_COLUMNS)}")
    columns = list(dict.fromkeys(k for _, rec in records for k in rec))
    layout = "pairs" if {"chosen", "rejected"} & set(columns) else "seed"
    wanted = PAIR_COLUMNS if layout == "pairs" else SEED_COLUMNS
    missing = [c for c in wanted[1:] if c not in columns]  # the context column may be left out
    if missing:
        raise DataError(f"{F.where(path, 1)}: missing column {F.quoted(missing)}; found columns "
                        f"{F.quoted(columns)}; expected {F.quoted(SEED_COLUMNS)} or {F.quoted(PAIR_COLUMNS)}")
    pairs, skipped = [], 0
    for line, rec in records:
        if layout == "seed":
            verdict = _human_eval(path, line, F.get_field(path, line, rec, "human_eval"))
            if verdict in SKIP_LABELS:
                skipped += 1
                continue
            policy = F.get_text(path, line, rec, "policy_response")
            reference = F.get_text(path, line, rec, "reference_response")
            chosen, rejected = (policy, reference) if verdict == 0 else (reference, policy)
            context = render_context(path, line, rec.get("context_messages"))
        else:
            chosen, rejected = F.get_text(path, line, rec, "chosen"), F.get_text(path, line, rec, "rejected")
            context = render_context(path, line, rec.get("prompt"))
        rest = {k: v for k, v in rec.items() if k not in wanted}
        pairs.append(PreferencePair(context, chosen, rejected, len(pairs), line, rest))
    if not pairs:
        why = f" ({skipped} rows skipped: human_eval 2 or 3)" if skipped else ""
        raise DataError(f"{path}: no usable preference rows{why}; expected at least one row with a preference")
    return PreferenceData(pairs, path, layout, skipped)


def split_pairs(pairs: list[PreferencePair], eval_ratio: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random ``eval_ratio`` of the pairs is held out (at least one of each)."""
    if len(pairs) < 2:
        raise DataError(f"{len(pairs)} preference pair(s): need at least 2 to hold some out for evaluation")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(eval_ratio * len(pairs))), len(pairs) - 1)
    held = set(order[:n_eval])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def render_context(path: Path, line: int, raw) -> str:
    """Conversation text from a context cell: plain text, or a list of {role, content} messages."""
    if raw is None:
        return ""
    messages = raw
    if isinstance(raw, str):
        text = raw.strip()
        if not text.startswith("["):
            return text
        messages = None
        try:
            messages = json.loads(text)
        except json.JSONDecodeError:
            try:
                messages = ast.literal_eval(text)  # literals only: never runs code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return text  # text that merely starts with "["
    if not isinstance(messages, list):
        raise DataError(f"{F.where(path, line)}: context holds {type(messages).__name__}; expected text "
                        "or a list of {'role', 'content'} messages")
    turns = []
    for m in messages:
        if isinstance(m, str):
            turns.append(m.strip())
        elif isinstance(m, dict) and isinstance(m.get("content"), str):
            role = m.get("role")
            turns.append(f"{role}: {m['content'].strip()}" if role else m["content"].strip())
        else:
            raise DataError(f"{F.where(path, line)}: context message {m!r} is not a {{'role', 'content'}} "
                            "mapping; expected a list of chat messages")
    return "\n".join(t for t in turns if t)


def _human_eval(path: Path, line: int, raw) -> int:
    value = raw
    if isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
            value = int(value) if value.is_integer() else value
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise DataError(f"{F.where(path, line)}: human_eval {raw!r} is not allowed; expected 0 (policy better), "
                        "1 (reference better), 2 or 3 (no preference, skipped)")
    return value


def _records(path: Path) -> list[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix not in (".xlsx", ".csv", ".jsonl"):
        raise DataError(f"preference file {path} has an unsupported type {path.suffix!r}; "
                        "expected .xlsx, .csv or .jsonl")
    if suffix == ".xlsx":
        return _xlsx_records(path)
    text = F.read_text(path, what="preference file")
    if suffix == ".jsonl":
        return F.read_json_lines(path, text)
    rows = F.read_rows(path, text, ",", csv.QUOTE_MINIMAL)
    if not rows:
        raise DataError(f"{F.where(path, 1)}: file is empty; expected a header line with columns "
                        f"{F.quoted(SEED_COLUMNS)} or {F.quoted(PAIR_COLUMNS)}")
    (_, header), rows = rows[0], rows[1:]
    return F.row_dicts(path, rows, [h.strip() for h in header], "comma")


def _xlsx_records(path: Path) -> list[tuple[int, dict]]:
    try:
        import openpyxl
    except ImportError:
        raise DataError(f"reading {path} needs openpyxl: pip install openpyxl") from None
    if not path.is_file():
        raise DataError(f"preference file {path} does not exist")
    try:
        book = openpyxl.load_workbook(path, data_only=True)  # not read_only: its rows skip blank lines
    except Exception as e:  # zip, XML or format errors of a damaged workbook: one line
        raise DataError(f"{path}: not a readable Excel workbook ({type(e).__name__}: {e}); expected an .xlsx file") \
            from None
    try:
        rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)] if book.worksheets else []
    finally:
        book.close()
    if not rows or all(c is None for c in rows[0]):
        raise DataError(f"{F.where(path, 1)}: first sheet is empty; expected a header row with columns "
                        f"{F.quoted(SEED_COLUMNS)} or {F.quoted(PAIR_COLUMNS)}")
    header = [str(c).strip() if c is not None else "" for c in rows[0]]
    out = []
    for n, row in enumerate(rows[1:], 2):
        if all(c is None or (isinstance(c, str) and not c.strip()) for c in row):
            continue
        out.append((n, {h: c for h, c in zip(header, row) if h}))
    return out


def pairs_from_labels(examples: list, positive: int = 1, seed: int = 0, max_pairs: int | None = None,
                      min_words: int = 4, context: str = "", detok: bool = True) -> list[PreferencePair]:
    """Pairs of a ``positive``-class text (chosen) and another class's text (rejected) of
    similar length (the nearest word count), so length tells the reward model nothing.
    ``detok`` undoes the GLUE files' PTB tokenization (``it 's`` -> ``It's``)."""
    if detok:
        examples = [dataclasses.replace(e, text=detokenize(e.text)) for e in examples]
    rng = random.Random(seed)
    good = [e for e in examples if e.label == positive and len(e.text.split()) >= min_words]
    bad = [e for e in examples if e.label != positive and len(e.text.split()) >= min_words]
    if not good or not bad:
        raise DataError(f"building preference pairs needs texts of class {positive} and of another class with at "
                        f"least {min_words} words; found {len(good)} and {len(bad)}")
    rng.shuffle(good)
    by_length: dict[int, list] = {}
    for e in bad:
        by_length.setdefault(len(e.text.split()), []).append(e)
    for bucket in by_length.values():
        rng.shuffle(bucket)
    pairs = []
    for e in good:
        n = len(e.text.split())
        lengths = sorted((k for k, v in by_length.items() if v), key=lambda k: (abs(k - n), k))
        if not lengths:
            break
        other = by_length[lengths[0]].pop()
        pairs.append(PreferencePair(context, e.text, other.text, len(pairs)))
        if max_pairs and len(pairs) >= max_pairs:
            break
    return pairs


def write_preferences(pairs: list[PreferencePair], path: str | Path) -> Path:
    """Write pairs in the prompt/chosen/rejected layout (.jsonl, .csv or .xlsx), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    rows = [{"prompt": p.context, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    if suffix == ".jsonl":
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows)))
    elif suffix == ".csv":
        def write_csv(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(PAIR_COLUMNS))
                w.writeheader()
                w.writerows(rows)
        atomic_write(path, write_csv)
    elif suffix == ".xlsx":
        import openpyxl

        def write_xlsx(tmp):
            book = openpyxl.Workbook()
            sheet = book.active
            sheet.append(list(PAIR_COLUMNS))
            for r in rows:
                sheet.append([r[c] for c in PAIR_COLUMNS])
            book.save(tmp)
        atomic_write(path, write_xlsx)
    else:
        raise DataError(f"output {path}: unsupported type {path.suffix!r}; expected .jsonl, .csv or .xlsx")
    return path
