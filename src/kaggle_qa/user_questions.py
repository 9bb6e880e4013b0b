"""A user's own question file: questions a user of the docs would ask, each with the answer they
expect and the page that holds it. The product is judged on it in its real situation (retrieved
context), beside the base model.

The file (catalog entry ``user_questions``, :class:`UserQuestionsDataset`) is a JSON list of::

    {"question": "How do I ...?", "expected_answer": "Run ... .", "url": "https://docs.example.org/page.html",
     "key_facts": ["--flag", ["pip install x", "conda install x"]]}

``key_facts`` is optional: what an answer must contain to be correct (each a string, or a list of
alternatives any one of which will do), matched by :func:`fact_found`. Without it a question is
judged by the ROUGE-L recall of its expected answer alone (``user_questions.correct_recall``).

Every row is validated on load; a bad row fails naming the file and the row. ``filepath: null``
(the default environment ships no such file) loads as ``None`` and the report says so.

A deterministic split by a hash of the (normalised) question puts each question in the
**selection** part (:func:`selection_rows`: model selection may look at it, e.g. its answer loss
beside the validation loss) or the **reported** part (:func:`report_rows`: only the report sees
it). The share is ``user_questions.selection_fraction``; a question keeps its side when other
questions are added or removed, and the two parts never share a question.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

REQUIRED_KEYS = ("question", "expected_answer", "url")
SPLIT_SALT = "user-questions-selection"


class UserQuestionsError(ValueError):
    """A user question file that cannot be used as it is (names the file and the row)."""


def validate_user_questions(rows: Any, source: str) -> list[dict]:
    """Rows with non-empty string `question`/`expected_answer` and an http(s) `url`; no question twice.

    Raises :class:`UserQuestionsError` naming `source` and the row (0-based, as it sits in the list).
    """
    if not isinstance(rows, list):
        raise UserQuestionsError(f"{source}: expected a JSON list of questions, got {type(rows).__name__}")
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"{source}: row {index}"
        if not isinstance(row, dict):
            raise UserQuestionsError(f"{where} is {type(row).__name__}, not an object with {list(REQUIRED_KEYS)}")
        for key in REQUIRED_KEYS:
            if key not in row:
                raise UserQuestionsError(f"{where} is missing key {key!r} (expected {list(REQUIRED_KEYS)})")
            if not isinstance(row[key], str) or not row[key].strip():
                raise UserQuestionsError(f"{where} key {key!r} must be a non-empty string, got {row[key]!r}")
        if not row["url"].startswith(("http://", "https://")):
            raise UserQuestionsError(f"{where} url {row['url']!r} is not an http(s) URL of the docs page")
        facts = row.get("key_facts")
        if facts is not None:
            if not isinstance(facts, list) or not facts or not all(
                    _fact_ok(fact) or isinstance(fact, list) and fact and all(_fact_ok(f) for f in fact) for fact in facts):
                raise UserQuestionsError(f"{where} key 'key_facts' must be a non-empty list of non-empty strings "
                                         f"(or lists of alternative strings), got {facts!r}")
        normalised = normalise_question(row["question"])
        if normalised in seen:
            raise UserQuestionsError(f"{where} repeats the question of row {seen[normalised]}: {row['question']!r}")
        seen[normalised] = index
    return rows


class UserQuestionsDataset(AbstractDataset):
    """Read-only, validated user question file; ``filepath: null`` loads as ``None`` (no file).

    Example (``conf/<site>/catalog_evaluate.yml``)::

        user_questions:
          type: kaggle_qa.user_questions.UserQuestionsDataset
          filepath: data/01_raw/my_questions.json
    """

    def __init__(self, filepath: str | None = None, metadata: dict | None = None):
        self._filepath = Path(filepath) if filepath else None
        self.metadata = metadata

    def load(self) -> list[dict] | None:
        if self._filepath is None:
            return None
        if not self._filepath.is_file():
            raise DatasetError(f"user_questions: {self._filepath} does not exist (set filepath: null for no file)")
        try:
            rows = json.loads(self._filepath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise UserQuestionsError(
                f"{self._filepath}: not valid JSON at line {error.lineno}, column {error.colno} ({error.msg})"
            ) from error
        return validate_user_questions(rows, str(self._filepath))

    def save(self, data) -> None:
        raise DatasetError(f"user_questions ({self._filepath}) is read-only: it is the user's own file")

    def _exists(self) -> bool:
        return self._filepath is None or self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath) if self._filepath else None}


def _fact_ok(fact: Any) -> bool:
    return isinstance(fact, str) and bool(_normalise_fact_text(fact))


def _normalise_fact_text(text: str) -> str:
    """Lower case; quotes and backticks as spaces; no spaces around ``= , ( ) [ ] :``; single spaces."""
    text = re.sub(r"[`'\"“”‘’]", " ", text.lower())
    text = re.sub(r"\s*([=,()\[\]:])\s*", r"\1", text)
    return " ".join(text.split())


def fact_found(answer: str, fact: str | list[str]) -> bool:
    """Whether the answer states a key fact (any of its alternatives): a case-insensitive match of
    the fact's words as whole words, quotes and backticks ignored, spacing around ``=`` and the like
    ignored (``multiple = True`` states ``multiple=True``; ``on`` is not found in ``option``)."""
    text = _normalise_fact_text(answer or "")
    for alternative in [fact] if isinstance(fact, str) else fact:
        needle = _normalise_fact_text(alternative)
        before = r"(?<![\w-])" if re.match(r"\w", needle) else ""  # whole words where the fact starts / ends with one
        after = r"(?!\w)" if re.search(r"\w$", needle) else ""
        if re.search(before + re.escape(needle) + after, text):
            return True
    return False


def normalise_question(question: str) -> str:
    """Lower case, single spaces: what the split hashes (so spacing or case edits keep a row's side)."""
    return " ".join(question.lower().split())


def hash_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) fixed by `text` and `salt` (SHA-256), the same on every machine and run."""
    digest = hashlib.sha256(f"{salt}\0{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_selection(question: str, fraction: float, salt: str = SPLIT_SALT) -> bool:
    """Whether a question belongs to the selection part (share `fraction`)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"user_questions.selection_fraction must be within [0, 1], got {fraction}")
    return hash_fraction(normalise_question(question), salt) < fraction


def selection_rows(rows: list[dict] | None, params: dict) -> list[dict]:
    """The rows model selection may use (`params`: the ``user_questions`` parameters)."""
    return [row for row in rows or [] if in_selection(row["question"], params["selection_fraction"])]


def report_rows(rows: list[dict] | None, params: dict) -> list[dict]:
    """The rows only the report sees: every row not in :func:`selection_rows`."""
    return [row for row in rows or [] if not in_selection(row["question"], params["selection_fraction"])]


def as_qa_rows(rows: list[dict]) -> list[dict]:
    """User questions in the project's QA row format (``instruction``/``output``; ``input`` left empty
    for the caller to fill with a context), each keeping its ``url``."""
    return [{"instruction": row["question"], "output": row["expected_answer"], "input": "", "url": row["url"],
             **({"key_facts": row["key_facts"]} if row.get("key_facts") else {})}
            for row in rows]
