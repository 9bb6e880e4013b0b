"""The QA row format shared by every pipeline: the paper's (input, instruction, output).

One source of truth for the required keys, row validation with file + row index in
the error, and task-type labels (for rows from the paper's published datasets that
carry none, :func:`infer_task_type` derives one from the text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REQUIRED_KEYS = ("input", "instruction", "output")
TASK_TYPES = ("yes_no", "true_false", "extractive_qa", "nli")
# The questions an assistant is asked (not statements to judge): refusal calibration and the round trip
OPEN_TASKS = ("extractive_qa",)
# The label words of the labelled task types: an answer's first word is its label
# ("True. <reason>"), and a label decision is the choice between these first tokens.
LABEL_CHOICES = {
    "true_false": ("True", "False"),
    "yes_no": ("Yes", "No"),
    "nli": ("Entailment", "Contradiction", "Neutral"),
}


class QARowError(ValueError):
    """A QA row is malformed; the message names the source and the row index."""


def validate_rows(rows: object, source: str) -> list[dict]:
    """Check rows are dicts with string `input`/`instruction`/`output`; raise naming source and row."""
    if not isinstance(rows, list):
        raise QARowError(f"{source}: expected a JSON list of rows, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise QARowError(f"{source}: row {index} is {type(row).__name__}, not an object")
        for key in REQUIRED_KEYS:
            if key not in row:
                raise QARowError(f"{source}: row {index} is missing key {key!r}")
            if not isinstance(row[key], str):
                raise QARowError(
                    f"{source}: row {index} key {key!r} holds {type(row[key]).__name__}, not a string"
                )
    return rows


_TRUE_FALSE_Q = re.compile(r"^\s*(true\s+or\s+false|true/false|t/f)\b|\btrue or false\b", re.I)
_NLI_Q = re.compile(r"\b(entail|contradict|neutral|premise|hypothesis|follows? from)\b", re.I)


def first_word(text: str) -> str:
    """Normalised first word of an answer: lower case, punctuation stripped ("True." → "true")."""
    match = re.search(r"[A-Za-z]+", text or "")
    return match.group(0).lower() if match else ""


def infer_task_type(row: dict) -> str:
    """A row's task type: its own `task_type` if present, otherwise derived from the text."""
    if row.get("task_type") in TASK_TYPES:
        return row["task_type"]
    answer = first_word(row.get("output", ""))
    question = row.get("instruction", "")
    if answer in ("true", "false"):
        return "true_false"
    if answer in ("yes", "no"):
        return "yes_no"
    if _TRUE_FALSE_Q.search(question):
        return "true_false"
    if _NLI_Q.search(question):
        return "nli"
    return "extractive_qa"


def count_task_types(rows: Iterable[dict]) -> dict[str, int]:
    counts = dict.fromkeys(TASK_TYPES, 0)
    for row in rows:
        counts[infer_task_type(row)] += 1
    return counts


def group_key(row: dict) -> str:
    """The unit rows are split by: the chunk a row was written from (rows of one chunk are not
    independent). Rows without a `chunk_id` (the paper's published data) are grouped by a hash
    of their context, or of their question when they have none."""
    if row.get("chunk_id"):
        return str(row["chunk_id"])
    import hashlib

    text = (row.get("input") or "").strip() or "q:" + (row.get("instruction") or "").strip()
    return "ctx:" + hashlib.sha256(text.encode()).hexdigest()[:16]
