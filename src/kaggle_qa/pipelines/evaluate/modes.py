"""Three context modes, base vs fine-tuned: how much the answer depends on what the model is shown.

- ``gold``: the chunk the question was written from (what the rest of the evaluation does);
- ``retrieved``: the ``retrieval.top_k`` chunks the assistant retrieves for the question
  (:meth:`kaggle_qa.retrieval.Retriever.retrieve`, as ``kaggle-qa ask`` does; its real situation:
  a user brings only a question);
- ``none``: no context at all (closed book, as the paper's chatbot ran).

Over the **whole** evaluated test set (``eval_test_set``; ``context_modes.limit`` keeps the
first N, null: all). The ``gold`` mode is the main evaluation itself: its answers and scores are taken
from ``raw_answers`` and ``predictions`` (same rows, same settings), never computed twice. The other modes' rows (the
test rows with the mode's context) run through the evaluate pipeline's own functions,
:func:`~.nodes.answer_base` and :func:`~.nodes.answer_fine_tuned`, with the main evaluation's
settings (``raw_answers["settings"]``: max_length and max_new_tokens as the adapter recorded
them): the same model loader, batched inference and base-result cache (the base model's results
are saved as ``context_modes_base_answers`` and reused from ``context_modes_base_answers_cache``
when base model, rows as shown and settings are unchanged; ``evaluate.reuse_base_results:
false`` recomputes them). Both non-gold modes run in one pass per model (one model load each).

Answers are scored by :func:`~kaggle_qa.metrics.scoring.score_answers` against the gold rows
(groundedness against the gold chunk in every mode, so "supported by the passage that answers
the question" means the same thing across modes) and summarized by
:func:`~kaggle_qa.metrics.summary.summarize`: the same metrics, chunk-bootstrap intervals and
paired base → fine-tuned p-values as the rest of the report.
"""

from __future__ import annotations

import logging

import numpy as np
from tabulate import tabulate

from kaggle_qa.metrics.scoring import score_answers
from kaggle_qa.metrics.summary import summarize
from kaggle_qa.prompting import fit_context
from kaggle_qa.retrieval import Retriever

from .nodes import answer_base, answer_fine_tuned, shared_retriever, shared_tokenizer

logger = logging.getLogger(__name__)

MODES = ("gold", "retrieved", "none")
MODELS = ("base", "fine_tuned")
REPORTED = {  # column → (metric group, metric name in kaggle_qa.metrics.summary)
    "answer_loss": ("overall", "answer_loss"),
    "first_word_acc": ("true_false+yes_no", "first_word_accuracy"),
    "loglik_acc": ("true_false+yes_no", "loglikelihood_accuracy"),
    "rougeL": ("overall", "rougeL"),
    "semantic_sim": ("overall", "semantic_similarity"),
    "grounded": ("overall", "grounded_rate"),
}


def retrieved_contexts(rows: list[dict], retriever: Retriever, retrieval: dict, tokenizer,
                       budget: int) -> tuple[list[str], list[bool]]:
    """Per row: the context the assistant would give the model for its question (the top-k chunks
    fitted to the prompt budget as ``kaggle-qa ask`` fits them, :func:`kaggle_qa.prompting.fit_context`),
    and whether the gold chunk is among them."""
    contexts, found = [], []
    for row in rows:
        hits = retriever.retrieve(row["instruction"], retrieval["top_k"], retrieval["method"]).hits
        contexts.append(fit_context(tokenizer, [hit["text"] for hit in hits], row["instruction"], budget))
        gold = row.get("chunk_id") or row.get("chunk")  # a prepared row names its chunk `chunk`
        found.append(any(hit["chunk_id"] == gold for hit in hits))
    return contexts, found


def mode_rows(rows: list[dict], modes: list[str], retrieved: list[str]) -> list[dict]:
    """The rows of every non-gold mode, one list: each test row with the mode's context, its id
    prefixed by the mode (``retrieved:12``)."""
    context = {"retrieved": retrieved, "none": [""] * len(rows)}
    return [{**row, "id": f"{mode}:{row['id']}", "input": context[mode][i]}
            for mode in modes if mode != "gold" for i, row in enumerate(rows)]


def _skipped(reason: str) -> tuple[dict, str, dict]:
    return ({"skipped": reason}, f"## Three context modes: gold, retrieved, none\n\nSkipped: {reason}.\n",
            {"key": None, "skipped": reason})


def evaluate_context_modes(
    base_model: str,
    adapter: str,
    test_set: list[dict],
    raw_answers: dict,
    predictions: list[dict],
    retrieval_index: dict,
    retrieval: dict,
    evaluate: dict,
    context_modes: dict,
    cache: dict | None = None,
) -> tuple[dict, str, dict]:
    """Gold / retrieved / no context × base / fine-tuned over the evaluated test set.

    `test_set` is ``eval_test_set``, `raw_answers` and `predictions` the main evaluation's answers and
    scores on it: the gold mode, neither recomputed nor rescored. Returns the summary, its markdown table and the base model's results of the
    non-gold modes (saved as ``context_modes_base_answers``, the cache's source).
    """
    limit = context_modes.get("limit")
    rows = list(test_set[:limit] if limit is not None else test_set)
    if not rows:
        return _skipped(f"{evaluate.get('test_set_name', 'the test set')} has no evaluated row")
    modes = list(context_modes.get("modes") or MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"context_modes.modes: unknown mode(s) {unknown}; expected some of {list(MODES)}")
    settings = raw_answers["settings"]  # the main evaluation's: max_length, max_new_tokens, dtype, …
    retriever = shared_retriever(retrieval_index, retrieval["rrf_k"], retrieval["batch_size"])  # one per index per process
    retrieved, found = retrieved_contexts(rows, retriever, retrieval, shared_tokenizer(base_model),
                                          settings["max_length"] - settings["max_new_tokens"])
    others = mode_rows(rows, modes, retrieved)
    base = answer_base(base_model, others, settings, evaluate, cache or {})
    fine_tuned = answer_fine_tuned(base_model, adapter, others, settings, evaluate, base)
    results: dict[str, dict[str, list[dict]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    position = 0
    for mode in modes:
        if mode == "gold":  # the main evaluation's answers on the same rows
            results[mode] = {label: raw_answers["models"][label]["rows"][: len(rows)] for label in MODELS}
            seconds[mode] = {label: raw_answers["models"][label]["seconds"] for label in MODELS}
            continue
        results[mode] = {label: fine_tuned["models"][label]["rows"][position : position + len(rows)] for label in MODELS}
        seconds[mode] = {label: fine_tuned["models"][label]["seconds"] for label in MODELS}
        position += len(rows)
    summary_rows = [{"task_type": r["task_type"], "output": r["output"], "chunk": r["chunk"]} for r in rows]
    per_mode = {}
    if "gold" in modes and [p["id"] for p in predictions[: len(rows)]] != [r["id"] for r in rows]:
        raise ValueError("context modes: predictions and eval_test_set are not the same rows in the same order")
    for mode in modes:
        records = {}
        for label in MODELS:
            if mode == "gold":  # scored by the main evaluation already
                records[label] = [{**p["scores"][label], "answer": p[f"{label}_answer"]} for p in predictions[: len(rows)]]
                continue
            answers = results[mode][label]
            scores = score_answers(
                rows, [r["answer"] for r in answers], semantic_similarity=evaluate["semantic_similarity"],
                bertscore=evaluate["bertscore"], groundedness=evaluate["groundedness"],
                choices=[r.get("choice") for r in answers], label=f"{label} answers, {mode} context",
            )
            records[label] = [{**result, **score} for result, score in zip(answers, scores)]
        per_mode[mode] = summarize(summary_rows, records, choices=settings["choices"], bootstrap=evaluate["bootstrap"])
    summary = {
        "questions": len(rows),
        "limit": limit,
        "retrieval": {"method": retrieval["method"], "top_k": retrieval["top_k"],
                      "gold_chunk_retrieved": float(np.mean(found))},
        "max_new_tokens": settings["max_new_tokens"],
        "modes": per_mode,
        "seconds": seconds,
        "base_results": {"key": base["key"], "reused_from": base.get("reused_from"),
                         "gold_from": "raw_answers (the main evaluation)"},
        "answers": {mode: {label: [r["answer"] for r in results[mode][label]] for label in MODELS} for mode in modes},
    }
    logger.info("Context modes on %d questions: %s", len(rows), {
        mode: {label: per_mode[mode]["metrics"][label]["overall"].get("answer_loss") for label in MODELS}
        for mode in modes})
    return summary, modes_markdown(summary), base


def _cell(result: dict, label: str, column: str) -> str:
    group, name = REPORTED[column]
    value = result["metrics"][label].get(group, {}).get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    low, high = (result["intervals"][label].get(group, {}).get(name) or [None, None])
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _change(result: dict, column: str) -> str:
    group, name = REPORTED[column]
    change = result["changes"].get("base→fine_tuned", {}).get(group, {}).get(name)
    if not change:
        return "–"
    return f"{change['delta']:+.3f}{' *' if change.get('significant') else ''}"


def modes_markdown(summary: dict) -> str:
    """A row per (model, mode) with 95 % chunk-bootstrap intervals, and the paired changes."""
    table_rows = [
        [label, mode, *(_cell(summary["modes"][mode], label, column) for column in REPORTED)]
        for label in MODELS for mode in summary["modes"]
    ]
    table_rows += [
        ["base → fine-tuned", mode, *(_change(summary["modes"][mode], column) for column in REPORTED)]
        for mode in summary["modes"]
    ]
    table = tabulate(table_rows, headers=["model", "context", *REPORTED], tablefmt="github")
    retrieval = summary["retrieval"]
    run = summary["base_results"]
    reuse = (f"**reused** from `context_modes_base_answers` version {run['reused_from']} (key `{run['key']}`)"
             if run.get("reused_from") else f"computed (key `{run['key']}`)")
    scope = (f"The first {summary['questions']} test questions (`context_modes.limit`)" if summary["limit"] is not None
             else f"All {summary['questions']} evaluated test questions")
    return "\n".join([
        "## Three context modes: gold, retrieved, none",
        "",
        f"{scope}; answers up to {summary['max_new_tokens']} tokens (the main evaluation's settings)."
        f" Retrieved context: top {retrieval['top_k']} chunks by `{retrieval['method']}`, as `kaggle-qa ask` retrieves"
        f" them (gold chunk among them for {retrieval['gold_chunk_retrieved']:.1%}). `none`: the question alone"
        " (closed book, as the paper's chatbot). `gold` is the main evaluation above (its answers, not recomputed)."
        " Accuracies on true/false + yes/no items; groundedness against the gold chunk in every mode."
        " [95 % chunk-bootstrap interval]; changes marked * have paired p < alpha.",
        "",
        f"Base model results of the retrieved and closed-book modes: {reuse}.",
        "",
        table,
        "",
    ])
