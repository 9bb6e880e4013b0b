"""Quality filters for generated rows (the paper's Table 6 known issues, made checks).

Each check returns a reason string or None; the first reason quarantines the row. Then
near-duplicate questions (ROUGE-L against the kept ones, Self-Instruct's rule) and class
balance (true/false, yes/no) are enforced in order, so the result is deterministic.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from tqdm.auto import tqdm

from kaggle_qa.qa_schema import first_word
from kaggle_qa.text import strip_label, support

from .audit import label_phrase
from .near_duplicates import RougeIndex

_TRANSLATION = re.compile(
    r"\btranslat\w*\b|\b(?:in|into|to) (?:spanish|french|german|portuguese|italian|chinese|japanese|"
    r"korean|hindi|russian|arabic|dutch)\b",
    re.I,
)
_LABELS = {"yes_no": ("yes", "no"), "true_false": ("true", "false")}
LABELLED_TASKS = ("true_false", "yes_no", "nli")


@lru_cache(maxsize=4)
def _language_identifier(candidates: tuple[str, ...]):
    """langid's bundled model (loads once, ~10 s), normalised over the candidate languages."""
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(list(candidates))
    return identifier


def language_reason(text: str, filters: dict) -> str | None:
    """Why `text` is not in the wanted language (langid), or None; short texts are not judged."""
    words = re.findall(r"[^\W\d_]+", text)
    if len(words) < filters["min_language_words"]:
        return None
    ranked = _language_identifier(tuple(filters["language_candidates"])).rank(" ".join(words))
    best, probability = ranked[0]
    # Docs jargon makes short English look Dutch or Portuguese now and then: only a confident
    # verdict for another language counts.
    if best != filters["language"] and probability >= filters["other_language_confidence"]:
        return f"non-English text ({best}, p={probability:.2f})"
    return None


def answer_support(output: str, context: str) -> float | None:
    """kaggle_qa.text.support of an answer without its leading label word ("True. X" → "X")."""
    return support(strip_label(output)[1], context)


def row_reason(row: dict, recipe: dict, filters: dict, chunk_text: str, label_phrases: tuple | list = ()) -> str | None:
    """The first quality problem of one row, or None when it may be kept. An open answer that
    ends in ":" (a lead-in without the list or command it introduces) or carries a label
    template's phrase (`label_phrases`, "Neutral. …") is no answer, from any teacher."""
    instruction, output = row["instruction"].strip(), row["output"].strip()
    if not instruction:
        return "empty instruction"
    if not output:
        return "empty output"
    if recipe["input_mode"] == "chunk" and not row["input"].strip():
        return "empty input where the recipe makes it mandatory"
    if _TRANSLATION.search(instruction):
        return "translation task"
    # Judged on question + answer together (short questions alone fool langid), and on the
    # answer alone, which would hold a translation.
    for what, text in (("question and answer", f"{instruction} {output}"), ("answer", output)):
        reason = language_reason(text, filters)
        if reason:
            return f"{what}: {reason}"
    if row["task_type"] == "extractive_qa":
        if output.endswith(":"):
            return "open answer is a lead-in (ends with ':')"
        if phrase := label_phrase(output, label_phrases):
            return f"label phrase in an open answer ({phrase!r})"
    bounds = recipe["output_words"][row["task_type"]]
    words = len(output.split())
    if words < bounds["min"]:
        return f"output of {words} word(s), recipe asks for at least {bounds['min']}"
    if words > bounds["max"]:
        return f"output of {words} words, recipe allows at most {bounds['max']}"
    if row["task_type"] in filters["support_task_types"]:
        score = answer_support(output, row["input"] or chunk_text)
        if score is None:
            return "answer has no content words"
        if score < filters["min_answer_support"]:
            return f"answer not supported by the input (support {score:.2f} < {filters['min_answer_support']})"
    return None


def test_set_leak(row: dict, test_questions: RougeIndex, filters: dict) -> tuple | None:
    """The test-set question this row repeats, or None: a near-identical question (ROUGE-L)
    whose test context (its payload) also supports this row's answer. The docs repeat passages
    across sections, so disjoint chunks alone do not prevent leakage; questions that merely
    share a template ("What should I know about X?") are not leaks."""
    for match in test_questions.matches(row["instruction"]):
        score = answer_support(row["output"], match[2])
        if score is None or score >= filters["min_answer_support"]:  # a bare label: same question, same answer
            return match
    return None


def quarantined(row: dict, version: str, reason: str, **detail) -> dict:
    """A dropped row with where it came from and why."""
    return {"version": version, "reason": reason, **detail, "row": row}


def filter_rows(
    rows: list[dict],
    version: str,
    recipe: dict,
    filters: dict,
    chunk_texts: dict,
    held_out: RougeIndex | None = None,
    label_phrases: tuple | list = (),
) -> tuple[list, list]:
    """(kept, quarantined) for one version: row checks, near-duplicates of kept questions with the
    same answer (see :func:`answer_key`) or of
    `held_out` ones (the test set's, when filtering the training set), then class balance."""
    kept, dropped = [], []
    index = RougeIndex(filters["max_question_rouge_l"])
    for row in tqdm(rows, desc=f"filtering {version}", unit="row"):
        reason = row_reason(row, recipe, filters, chunk_texts.get(row.get("chunk_id"), ""), label_phrases)
        if reason is None and held_out is not None and (leak := test_set_leak(row, held_out, filters)):
            reason = "test-set question about the same text"
            dropped.append(quarantined(row, version, reason, rouge_l=round(leak[0], 3), of=leak[1]))
            continue
        if reason is None:
            answer = answer_key(row)
            same = next((m for m in index.matches(row["instruction"]) if m[2] == answer), None)
            if same:
                dropped.append(quarantined(row, version, "near-duplicate question", rouge_l=round(same[0], 3), of=same[1]))
                continue
            index.add(row["instruction"], payload=answer)
            kept.append(row)
        else:
            dropped.append(quarantined(row, version, reason))
    for task, (positive, _) in _LABELS.items():
        share = recipe["true_share"] if task == "true_false" else recipe["yes_share"]
        kept, surplus = rebalance(kept, task, positive, share, filters["balance_tolerance"])
        dropped += [
            quarantined(row, version, f"{task} rebalance to {share:.2f} ± {filters['balance_tolerance']}")
            for row in surplus
        ]
    return kept, dropped


def answer_key(row: dict) -> tuple:
    """What makes two near-identical questions the same item: a labelled row's task and label
    (a true and a false statement of one fact are a contrast pair, both kept), an open row's
    answer (like-worded questions with different answers are different questions: "What should
    I know about input streams?" and "… about command aliases?" share 5 of 7 words)."""
    if row["task_type"] in LABELLED_TASKS:
        return (row["task_type"], label_of(row))
    return (row["task_type"], " ".join(str(row["output"]).split()).lower())


def label_of(row: dict) -> str:
    """The row's label word ("true", "no", …): its own `label`, else its answer's first word."""
    return row.get("label") or first_word(row["output"])


def rebalance(rows: list[dict], task: str, positive: str, share: float, tolerance: float) -> tuple[list, list]:
    """Drop the latest rows of the majority label until its share is within share ± tolerance
    (or the majority leads by a single row, the best a small set can do)."""
    of_task = [i for i, row in enumerate(rows) if row["task_type"] == task]
    counts = Counter(label_of(rows[i]) == positive for i in of_task)
    n_pos, n_neg = counts[True], counts[False]
    surplus_idx: set[int] = set()
    # positive share above the bound: drop positives; below: drop negatives (from the end).
    if of_task and n_pos / len(of_task) > share + tolerance:
        keep_pos = int((share + tolerance) * n_neg / (1 - share - tolerance)) if share + tolerance < 1 else n_pos
        keep_pos = max(keep_pos, n_neg + 1)
        surplus_idx = {i for i in of_task if label_of(rows[i]) == positive}
        surplus_idx = set(sorted(surplus_idx)[keep_pos:])
    elif of_task and n_pos / len(of_task) < share - tolerance:
        keep_neg = int(n_pos * (1 - share + tolerance) / (share - tolerance)) if share - tolerance > 0 else n_neg
        keep_neg = max(keep_neg, n_pos + 1)
        surplus_idx = {i for i in of_task if label_of(rows[i]) != positive}
        surplus_idx = set(sorted(surplus_idx)[keep_neg:])
    return [r for i, r in enumerate(rows) if i not in surplus_idx], [rows[i] for i in sorted(surplus_idx)]
