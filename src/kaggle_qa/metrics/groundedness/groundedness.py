"""Groundedness of answers in their context, and invented references.

Definitions (also printed in the evaluation report):

- *support* of an answer: the share of its content words (lower-cased alphanumeric
  tokens that are not stop words, Porter-stemmed) that occur in the context or the
  question. An answer with no content words ("True.") claims nothing and has support 1.
- *grounded*: support >= ``support_threshold`` (default 0.8).
- *invented reference*: the answer cites something the context does not contain: a URL,
  a section number ("Section 4.2", "§3"), the text after "Reference:"/"Source:", or a
  quoted title after "refer to"/"see"/"documentation on" ("Refer to 'Creating a New
  Competition'"). A citation counts as present when its normalised text (lower case,
  punctuation collapsed to spaces) is a substring of the normalised context.
"""

import re

import datasets
import evaluate
from nltk.stem import PorterStemmer

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into is
    it its itself just let me more most my myself no nor not of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yourself yourselves yes true
    false one may might must shall s t""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_URL = re.compile(r"(?:https?://|www\.)[^\s)\]>\"']+", re.I)
_SECTION = re.compile(r"(?:\bsection|\bsec\.|§)\s*\d+(?:\.\d+)*", re.I)
_REFERENCE_LINE = re.compile(r"\b(?:references?|sources?)\s*:\s*([^\n]+)", re.I)
_QUOTED_TITLE = re.compile(
    r"\b(?:refer(?:ence)? to|see|documentation on|section)\s+(?:the\s+)?[\"'“‘]([^\"'”’]{3,})[\"'”’]", re.I
)
_STEMMER = PorterStemmer()


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_stems(text: str) -> set[str]:
    """Stemmed content words of `text` (stop words and single letters dropped)."""
    return {
        _STEMMER.stem(word)
        for word in _WORD.findall(text.lower())
        if word not in STOP_WORDS and len(word) > 1
    }


def answer_support(answer: str, context: str) -> float:
    """Share of the answer's content words found in the context (1.0 when it has none)."""
    words = content_stems(answer)
    if not words:
        return 1.0
    return len(words & content_stems(context)) / len(words)


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


class Groundedness(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=(
                "predictions: answers; contexts: the context each answer was given; "
                "questions (optional kwarg): words of the question also count as support."
            ),
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "contexts": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, contexts, questions=None, support_threshold=0.8):
        questions = questions or [""] * len(predictions)
        support, grounded, invented = [], [], []
        for answer, context, question in zip(predictions, contexts, questions):
            share = answer_support(answer, f"{context}\n{question}")
            support.append(share)
            grounded.append(float(share >= support_threshold))
            invented.append(invented_citations(answer, context))
        has_invented = [float(bool(items)) for items in invented]
        n = max(len(predictions), 1)
        return {
            "support": sum(support) / n,
            "grounded_rate": sum(grounded) / n,
            "invented_reference_rate": sum(has_invented) / n,
            "per_item": {
                "support": support,
                "grounded": grounded,
                "invented_reference": has_invented,
                "invented_citations": invented,
            },
        }
