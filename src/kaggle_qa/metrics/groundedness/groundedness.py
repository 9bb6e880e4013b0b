"""Groundedness of answers in their context, copies of the question, and invented references.

Definitions (also printed in the evaluation report):

- An answer's *claim* is the answer without its leading label word ("True.", "No,"); each sentence
  of the claim is checked against its *supporting sentence*: the context sentence that contains
  the largest share of the claim sentence's content tokens (:func:`kaggle_qa.text.support`, the
  project's one definition: stemmed words that are not stop words, and numbers). The question
  never counts.
- A claim sentence is *supported* when its support in that one sentence is at least
  ``support_threshold`` (default 0.8) and it *carries the same logic*: every negation ("not",
  "no", "never", "cannot", "-n't", "without" ...), quantifier ("all", "only", "more", "few",
  "some" ...) and number of the claim sentence occurs in the supporting sentence, and a negation
  of the supporting sentence occurs in the claim sentence too (dropping a "not" reverses the
  claim). Support from one sentence, not the whole chunk: "public" from one sentence and
  "private by default" from another do not back "public by default".
- *grounded*: every claim sentence is supported. An answer that claims nothing (empty, or only a
  label: "True.") is **not grounded** and stays in the denominator (``label_only`` counts it), so
  answering less never raises the rate. ``support`` is the mean support of the claim sentences
  (0 for an answer that claims nothing).
- *copied question*: the answer's content tokens and the question's (label words aside) cover
  each other at ``support_threshold`` or more: the answer repeats the question. Flagged whether
  or not it is grounded (``copied_question_rate``).
- *invented reference*: the answer cites something the context does not contain: a URL,
  a section number ("Section 4.2", "§3"), the text after "Reference:"/"Source:", or a
  quoted title after "refer to"/"see"/"documentation on" ("Refer to 'Creating a New
  Competition'"). A citation counts as present when its normalised text (lower case,
  punctuation collapsed to spaces) is a substring of the normalised context.
"""

import re

import datasets
import evaluate

from kaggle_qa.text import LABEL_WORDS, content_tokens, numbers, split_sentences, strip_label, support

_WORD = re.compile(r"[a-z0-9]+")
_URL = re.compile(r"(?:https?://|www\.)[^\s)\]>\"']+", re.I)
_SECTION = re.compile(r"(?:\bsection|\bsec\.|§)\s*\d+(?:\.\d+)*", re.I)
_REFERENCE_LINE = re.compile(r"\b(?:references?|sources?)\s*:\s*([^\n]+)", re.I)
_QUOTED_TITLE = re.compile(
    r"\b(?:refer(?:ence)? to|see|documentation on|section)\s+(?:the\s+)?[\"'“‘]([^\"'”’]{3,})[\"'”’]", re.I
)
_LOGIC_TOKEN = re.compile(r"[a-z]+(?:['’]t)?")
NEGATIONS = frozenset("not no never cannot none nor neither nobody nothing nowhere without".split())
QUANTIFIERS = frozenset(
    "all every each any some only more most less least few fewer many much several both always "
    "sometimes often usually rarely either multiple single".split()
)


_LABEL_STEMS = frozenset(content_tokens(" ".join(LABEL_WORDS)))


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def logic_words(text: str) -> tuple[set[str], set[str]]:
    """(negations, quantifiers) a text states; "can't"/"doesn't"/"cannot" count as the negation "not"."""
    negations, quantifiers = set(), set()
    for token in _LOGIC_TOKEN.findall(text.lower()):
        if token.endswith(("'t", "’t")) or token in ("cannot", "not"):
            negations.add("not")
        elif token in NEGATIONS:
            negations.add(token)
        elif token in QUANTIFIERS:
            quantifiers.add(token)
    return negations, quantifiers


def sentence_verdict(claim: str, sentences: list[str], support_threshold: float) -> dict:
    """One claim sentence against its best supporting context sentence."""
    scored = [(support(claim, sentence) or 0.0, sentence) for sentence in sentences]
    share, source = max(scored, key=lambda pair: pair[0]) if scored else (0.0, "")
    claim_neg, claim_quant = logic_words(claim)
    source_neg, source_quant = logic_words(source)
    mismatches = sorted(f"+{word}" for word in (claim_neg - source_neg) | (claim_quant - source_quant))
    mismatches += sorted(f"-{word}" for word in source_neg - claim_neg)
    missing = sorted(numbers(claim) - numbers(source))
    return {"support": share, "source": source, "logic_mismatch": mismatches, "unsupported_numbers": missing,
            "supported": share >= support_threshold and not mismatches and not missing}


def grounding(answer: str, context: str, support_threshold: float) -> dict:
    """One answer's verdict (see module docstring). An answer with no content word is not grounded."""
    _, claim = strip_label(answer)
    claims = [sentence for sentence in split_sentences(claim) if content_tokens(sentence)]
    if not claims:
        return {"support": 0.0, "grounded": 0.0, "unsupported_numbers": [], "logic_mismatch": [], "label_only": 1.0}
    sentences = split_sentences(context)
    verdicts = [sentence_verdict(sentence, sentences, support_threshold) for sentence in claims]
    return {
        "support": sum(v["support"] for v in verdicts) / len(verdicts),
        "grounded": float(all(v["supported"] for v in verdicts)),
        "unsupported_numbers": sorted({n for v in verdicts for n in v["unsupported_numbers"]}),
        "logic_mismatch": sorted({m for v in verdicts for m in v["logic_mismatch"]}),
        "label_only": 0.0,
    }


def copies_question(answer: str, question: str, threshold: float) -> bool:
    """The answer's content and the question's (label words aside) cover each other at `threshold`."""
    answer_tokens = set(content_tokens(strip_label(answer)[1])) - _LABEL_STEMS
    question_tokens = set(content_tokens(question)) - _LABEL_STEMS
    if not answer_tokens or not question_tokens:
        return False
    shared = answer_tokens & question_tokens
    return len(shared) / len(answer_tokens) >= threshold and len(shared) / len(question_tokens) >= threshold


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
                "of support); questions (optional kwarg): used only to flag answers that copy the "
                "question (never a source of support)."
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
        copied = [float(copies_question(a, q, support_threshold)) for a, q in zip(predictions, questions)]
        per_item = {key: [v[key] for v in verdicts] for key in ("support", "grounded", "label_only")}
        n = max(len(predictions), 1)
        return {
            "support": _mean(per_item["support"]),
            "grounded_rate": _mean(per_item["grounded"]),
            "label_only_rate": sum(per_item["label_only"]) / n,
            "label_only_count": int(sum(per_item["label_only"])),
            "copied_question_rate": sum(copied) / n,
            "invented_reference_rate": sum(has_invented) / n,
            "per_item": {
                **per_item,
                "unsupported_numbers": [v["unsupported_numbers"] for v in verdicts],
                "logic_mismatch": [v["logic_mismatch"] for v in verdicts],
                "copied_question": copied,
                "invented_reference": has_invented,
                "invented_citations": invented,
            },
        }
