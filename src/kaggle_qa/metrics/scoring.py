"""Score a list of answers against test rows with every offline metric module: one call.

:func:`score_answers` is the API for any evaluation (base vs fine-tuned, retrieval mode,
your own script): it takes test rows (``input``, ``instruction``, ``output``, ``task_type``)
and one answer per row, and returns one flat score record per row. Empty answers or
references are scored by the rule of :mod:`kaggle_qa.metrics.empty`, never crash.
:func:`kaggle_qa.metrics.summary.summarize` turns such records into means with chunk
bootstrap intervals.
"""

from __future__ import annotations

import logging

from kaggle_qa.metrics import load_metric
from kaggle_qa.metrics.empty import is_empty
from kaggle_qa.qa_schema import first_word

logger = logging.getLogger(__name__)


def is_choice_item(row: dict, choices: dict[str, list[str]]) -> bool:
    """A labelled item: its task type has candidates and its reference starts with one of them."""
    words = choices.get(row["task_type"], [])
    return first_word(row["output"]) in {first_word(word) for word in words}


def score_answers(
    rows: list[dict],
    answers: list[str],
    *,
    semantic_similarity: dict | None = None,
    bertscore: dict | None = None,
    groundedness: dict | None = None,
    choices: list[str | None] | None = None,
    label: str = "answers",
) -> list[dict]:
    """Per-answer scores: ROUGE, sentence BLEU, length, first word, MiniLM similarity, BERTScore,
    groundedness, and (when `choices` gives each row's log-likelihood choice) choice correctness.

    `semantic_similarity` / `bertscore` / `groundedness` are the keyword arguments of those
    metric modules (``conf/base/parameters_evaluate.yml`` holds the project's values).
    """
    if len(rows) != len(answers):
        raise ValueError(f"{label}: {len(answers)} answers for {len(rows)} rows")
    if not rows:
        return []
    answers = [answer or "" for answer in answers]
    references = [row["output"] for row in rows]
    semantic = semantic_similarity or {}
    pairs = dict(predictions=answers, references=references)
    columns: dict[str, list] = {}
    for name, kwargs in (
        ("qa_rouge", {}),
        ("qa_bleu", {}),
        ("answer_length", {}),
        ("first_word_accuracy", {}),
        ("semantic_similarity", {key: semantic[key] for key in ("model_path", "batch_size") if key in semantic}),
        ("qa_bertscore", {"model_path": semantic.get("model_path"), **(bertscore or {})}),
    ):
        logger.info("Scoring %s: %s", label, name)
        columns.update(load_metric(name).compute(**pairs, **kwargs)["per_item"])
    columns["first_word_correct"] = columns.pop("correct")
    grounded = load_metric("groundedness").compute(
        predictions=answers,
        contexts=[row["input"] for row in rows],
        questions=[row["instruction"] for row in rows],
        **(groundedness or {}),
    )
    columns.update(grounded["per_item"])
    columns["empty_answer"] = [float(is_empty(answer)) for answer in answers]
    if choices is not None:
        columns["choice_correct"] = [
            float(choice is not None and first_word(choice) == first_word(reference) != "")
            for choice, reference in zip(choices, references)
        ]
    return [{name: values[i] for name, values in columns.items()} for i in range(len(rows))]
