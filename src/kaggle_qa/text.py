"""Text primitives with one definition for the whole project.

- :func:`split_sentences`: the one sentence splitter (ingestion's chunking, the synthesis
  teachers and filters, the audit all use it).
- :func:`support`: the one definition of how far a context backs a text: the share of the
  text's *content tokens* found among the context's. Content tokens are lower-cased
  alphanumeric runs, Porter-stemmed, without stop words; numbers count (digits of any length,
  "5" included; "13,000" and "13000" are the same number); other single characters do not.
  Support comes from the given context only: whoever calls it decides what the context is,
  and a question is never part of it.
- :func:`unsupported_numbers`: numbers of a text that its context does not contain (a wrong
  number is a wrong claim however many other words match).
- :func:`strip_label`: an answer's leading label word ("True.", "No,") and the rest.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.stem import PorterStemmer

# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by space and
# an upper-case letter, digit, quote, bracket or backtick; common abbreviations and initials
# ("J. Smith") are not sentence ends.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]?\s+(?=[A-Z0-9\"'“‘(\[`])")
ABBREVIATIONS = (
    "e.g.",
    "i.e.",
    "etc.",
    "vs.",
    "ex.",
    "Ex.",
    "approx.",
    "Mr.",
    "Ms.",
    "Dr.",
    "No.",
    "Fig.",
    "U.S.",
)
_INITIAL = re.compile(r"\b[A-Z]\.$")

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into is
    it its itself just let me more most my myself no nor not of off on once only onto or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up upon very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves may might must shall s t""".split()
)
LABEL_WORDS = frozenset("true false yes no entailment contradiction neutral".split())
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*$")
_LEADING_LABEL = re.compile(r"^\W*(?P<label>[A-Za-z]+)\b[.!,:;]*\s*")
_STEMMER = PorterStemmer()


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, line by line (a line of clean docs text is a paragraph, a list item
    or a heading); a fenced code block stays whole; whitespace inside a sentence is collapsed."""
    if text.lstrip().startswith("```"):
        return [text.strip()] if text.strip() else []
    sentences: list[str] = []
    for line in text.splitlines():
        flat = " ".join(line.split())
        start = 0
        for match in _SENTENCE_END.finditer(flat):
            before = flat[: match.start()]
            if before.endswith(ABBREVIATIONS) or _INITIAL.search(before):
                continue
            if flat[start : match.start()].strip():
                sentences.append(flat[start : match.end()].rstrip())
            start = match.end()
        if flat[start:].strip():
            sentences.append(flat[start:].strip())
    return sentences


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


def _normal_number(token: str) -> str:
    """"13,000" → "13000"; "1.5" stays (a decimal point, not a thousands separator)."""
    return re.sub(r",(?=\d{3}\b)", "", token)


def content_tokens(text: str) -> list[str]:
    """The text's content tokens in order: stemmed words that are not stop words (two letters
    or more) and numbers (any length)."""
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if token[0].isdigit():
            tokens.append(_normal_number(token.rstrip(".,")))
        elif len(token) > 1 and token not in STOP_WORDS:
            tokens.append(_stem(token))
    return tokens


def numbers(text: str) -> set[str]:
    """The numbers a text states, normalised ("13,000" → "13000")."""
    return {token for token in content_tokens(text) if _NUMBER.match(token)}


def support(text: str, context: str) -> float | None:
    """Share of the distinct content tokens of `text` found in `context`; None when `text`
    has no content token (it claims nothing that could be checked)."""
    tokens = set(content_tokens(text))
    if not tokens:
        return None
    return len(tokens & set(content_tokens(context))) / len(tokens)


def unsupported_numbers(text: str, context: str) -> list[str]:
    """The numbers of `text` that `context` does not state, sorted."""
    return sorted(numbers(text) - numbers(context))


def strip_label(answer: str) -> tuple[str | None, str]:
    """(label word or None, the rest): "True. X is Y." → ("true", "X is Y.")."""
    match = _LEADING_LABEL.match(answer or "")
    if match and match["label"].lower() in LABEL_WORDS:
        return match["label"].lower(), answer[match.end() :].strip()
    return None, (answer or "").strip()
