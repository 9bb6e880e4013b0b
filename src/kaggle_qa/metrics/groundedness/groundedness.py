"""Groundedness of answers in their context, and invented references.

Definitions (also printed in the evaluation report):

- *support* of an answer: :func:`kaggle_qa.text.support` (the project's one definition) of
  the answer without its leading label word ("True.", "No,"), against the context only: the
  share of its content tokens (stemmed words that are not stop words, and numbers, "5"
  included) that the context contains. The question never counts: an answer that repeats a
  false premise of the question is not backed by the context.
- *label only*: an answer with no content beyond a label ("True.", "No.") or an empty one
  claims nothing the context could back; it is not counted in ``support`` or
  ``grounded_rate`` (its per-item values are None) and is reported as ``label_only_rate``.
- *grounded*: support >= ``support_threshold`` (default 0.8) and every number of the
  answer occurs in the context (a wrong number is a wrong claim).
- *invented reference*: the answer cites something the context does not contain: a URL,
  a section number ("Section 4.2", "§3"), the text after "Reference:"/"Source:", or a
  quoted title after "refer to"/"see"/"documentation on" ("Refer to 'Creating a New
  Competition'"). A citation counts as present when its normalised text (lower case,
  punctuation collapsed to spaces) is a substring of the normalised context.
"""

import re

import datasets
import evaluate

from kaggle_qa.text import strip_label, support, unsupported_numbers

_WORD = re.compile(r"[a-z0-9]+")
_URL = re.compile(r"(?:https?://|www\.)[^\s)\]>\"']+", re.I)
_SECTION = re.compile(r"(?:\bsection|\bsec\.|§)\s*\d+(?:\.\d+)*", re.I)
_REFERENCE_LINE = re.compile(r"\b(?:references?|sources?)\s*:\s*([^\n]+)", re.I)
_QUOTED_TITLE = re.compile(
    r"\b(?:refer(?:ence)? to|see|documentation on|section)\s+(?:the\s+)?[\"'“‘]([^\"'”’]{3,})[\"'”’]", re.I
)


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def grounding(answer: str, context: str, support_threshold: float) -> dict:
    """One answer's verdict: support, unsupported numbers, grounded, label only. Support and
    grounded are None for a label-only (or empty) answer, which is not counted."""
    _, claim = strip_label(answer)
    share = support(claim, context)
    if share is None:
        return {"support": None, "grounded": None, "unsupported_numbers": [], "label_only": 1.0}
    missing = unsupported_numbers(claim, context)
    grounded = float(share >= support_threshold and not missing)
    return {"support": share, "grounded": grounded, "unsupported_numbers": missing, "label_only": 0.0}


def citations(answer: str) -> list[str]:
    """Everything the answer cites: URLs, section numbers, "Reference: X", quoted titles."""
    found = [match.group(0).rstrip(".,;:") for match in _URL.finditer(answer)]
    found += [match.group(0) for match in _SECTION.finditer(answer)]
    found += [match.group(1).strip().rstrip(".") for match in _REFERENCE_LINE.finditer(answer)]
    found += [match.group(1).strip() for match in _QUOTED_TITLE.finditer(answer)]
    return [text for text in found if _normalise(text)]


def invented_citations(answer: str, context: str) -> list[str]:
    """The answer's citations whose normalised text does not occur in the context."""
    haystack = f" {_normalise(context)} "
    return [text for text in citations(answer) if f" {_normalise(text)} " not in haystack]


def _mean(values: list) -> float | None:
    counted = [value for value in values if value is not None]
    return sum(counted) / len(counted) if counted else None


class Groundedness(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=(
                "predictions: answers; contexts: the context each answer was given (the only source "
                "of support); questions (optional kwarg): used only to count answers whose content "
                "words the context lacks but the question has (a premise copied from the question)."
            ),
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "contexts": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, contexts, questions=None, support_threshold=0.8):
        questions = questions or [""] * len(predictions)
        verdicts = [grounding(answer, context, support_threshold) for answer, context in zip(predictions, contexts)]
        invented = [invented_citations(answer, context) for answer, context in zip(predictions, contexts)]
        has_invented = [float(bool(items)) for items in invented]
        # Not grounded, but its missing words are the question's: the answer repeats the question.
        from_question = [
            float(v["grounded"] == 0.0 and (support(strip_label(a)[1], f"{c}\n{q}") or 0.0) >= support_threshold)
            for v, a, c, q in zip(verdicts, predictions, contexts, questions)
        ]
        per_item = {key: [v[key] for v in verdicts] for key in ("support", "grounded", "label_only")}
        n = max(len(predictions), 1)
        return {
            "support": _mean(per_item["support"]),
            "grounded_rate": _mean(per_item["grounded"]),
            "label_only_rate": sum(per_item["label_only"]) / n,
            "label_only_count": int(sum(per_item["label_only"])),
            "copied_from_question_rate": sum(from_question) / n,
            "invented_reference_rate": sum(has_invented) / n,
            "per_item": {
                **per_item,
                "unsupported_numbers": [v["unsupported_numbers"] for v in verdicts],
                "copied_from_question": from_question,
                "invented_reference": has_invented,
                "invented_citations": invented,
            },
        }
