"""Three context modes, base vs fine-tuned: how much the answer depends on what the model is shown.

- ``gold``: the chunk the question was written from (what the rest of the evaluation does);
- ``retrieved``: the ``retrieval.top_k`` chunks the assistant retrieves for the question
  (its real situation: a user brings only a question);
- ``none``: no context at all (closed book, as the paper's chatbot ran).

Each mode runs the evaluate package's :class:`~.inference.Evaluator` (same prompt template,
greedy decoding, teacher-forced answer loss, log-likelihood choice) on the same first
``context_modes.limit`` test questions, for the base model and base + adapter (loaded by the
assistant's one loader), and scores the answers with the project's metric modules.
Groundedness is measured against the gold chunk in every mode, so "supported by the passage
that answers the question" means the same thing across modes.
"""

from __future__ import annotations

import logging

import numpy as np
from tabulate import tabulate

from kaggle_qa.assistant.core import load_answer_model
from kaggle_qa.metrics.scoring import score_answers
from kaggle_qa.metrics.summary import chunk_key, summarize
from kaggle_qa.modeling import load_tokenizer
from kaggle_qa.prompting import candidate_token_ids
from kaggle_qa.qa_schema import infer_task_type
from kaggle_qa.retrieval import Retriever

from .inference import Evaluator
from .nodes import read_adapter_settings

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


def contexts_for(rows: list[dict], retriever: Retriever, retrieval: dict) -> tuple[dict[str, list[str]], list[bool]]:
    """The context of every row in each mode, and whether retrieval found the gold chunk."""
    retrieved, found = [], []
    for row in rows:
        hits = retriever.retrieve(row["instruction"], retrieval["top_k"], retrieval["method"]).hits
        retrieved.append("\n\n".join(hit["text"] for hit in hits))
        found.append(any(hit["chunk_id"] == row.get("chunk_id") for hit in hits))
    return {"gold": [row["input"] for row in rows], "retrieved": retrieved, "none": [""] * len(rows)}, found


def evaluate_context_modes(
    base_model: str,
    adapter: str,
    test_set: list[dict],
    retrieval_index: dict,
    retrieval: dict,
    evaluate: dict,
    context_modes: dict,
) -> tuple[dict, str]:
    """Gold / retrieved / no context × base / fine-tuned on the first `limit` questions.

    Per mode, both models' answers are scored by :func:`~kaggle_qa.metrics.scoring.score_answers`
    against the gold rows (so groundedness is against the gold chunk) and summarized by
    :func:`~kaggle_qa.metrics.summary.summarize`: the same metrics, chunk-bootstrap intervals
    and paired base → fine-tuned p-values as the rest of the report.
    """
    rows = test_set[: context_modes["limit"]] if context_modes.get("limit") else list(test_set)
    rows = [dict(row, task_type=infer_task_type(row)) for row in rows]  # published rows carry none
    if not rows:
        raise ValueError(f"{evaluate.get('test_set_name', 'test set')} is empty: nothing to evaluate")
    retriever = Retriever(retrieval_index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    contexts, found = contexts_for(rows, retriever, retrieval)
    modes = list(context_modes.get("modes", MODES))
    tokenizer = load_tokenizer(base_model)
    settings = read_adapter_settings(base_model, adapter, evaluate)  # max_length as trained; checks base + template
    candidates = candidate_token_ids(tokenizer, settings["choices"])
    choice_rows = {i: candidates[row["task_type"]] for i, row in enumerate(rows) if row["task_type"] in candidates}
    records: dict = {mode: {} for mode in modes}
    seconds: dict = {mode: {} for mode in modes}
    for model_label, adapter_dir in (("base", None), ("fine_tuned", adapter)):
        model = load_answer_model(base_model, adapter_dir, settings["dtype"])
        evaluator = Evaluator(model, tokenizer, batch_size=evaluate["batch_size"],
                              max_new_tokens=context_modes["max_new_tokens"], max_length=settings["max_length"])
        for mode in modes:
            mode_rows = [{**row, "input": context} for row, context in zip(rows, contexts[mode])]
            results, took = evaluator.run(evaluator.examples(mode_rows), choice_rows, whole_sequence=False,
                                          label=f"{model_label}, {mode} context")
            scores = score_answers(
                rows, [r["answer"] for r in results], semantic_similarity=evaluate["semantic_similarity"],
                bertscore=evaluate["bertscore"], groundedness=evaluate["groundedness"],
                choices=[r.get("choice") for r in results], label=f"{model_label} answers, {mode} context",
            )
            records[mode][model_label] = [{**result, **score} for result, score in zip(results, scores)]
            seconds[mode][model_label] = round(took, 1)
        del model
    summary_rows = [{"task_type": r["task_type"], "output": r["output"], "chunk": chunk_key(r)} for r in rows]
    per_mode = {
        mode: summarize(summary_rows, records[mode], choices=settings["choices"], bootstrap=evaluate["bootstrap"])
        for mode in modes
    }
    summary = {
        "questions": len(rows),
        "limit": context_modes.get("limit"),
        "retrieval": {"method": retrieval["method"], "top_k": retrieval["top_k"],
                      "gold_chunk_retrieved": float(np.mean(found))},
        "max_new_tokens": context_modes["max_new_tokens"],
        "modes": per_mode,
        "seconds": seconds,
        "answers": {mode: {label: [r["answer"] for r in records[mode][label]] for label in MODELS} for mode in modes},
    }
    logger.info("Context modes on %d questions: %s", len(rows), {
        mode: {label: per_mode[mode]["metrics"][label]["overall"].get("answer_loss") for label in MODELS}
        for mode in modes})
    return summary, modes_markdown(summary)


def _cell(result: dict, label: str, column: str) -> str:
    group, name = REPORTED[column]
    value = result["metrics"][label].get(group, {}).get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    low, high = result["intervals"][label].get(group, {}).get(name, [None, None])
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _change(result: dict, column: str) -> str:
    group, name = REPORTED[column]
    change = result["changes"].get("base→fine_tuned", {}).get(group, {}).get(name)
    if not change:
        return "–"
    return f"{change['delta']:+.3f}{' *' if change['significant'] else ''}"


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
    return "\n".join([
        "## Three context modes: gold, retrieved, none",
        "",
        f"The first {summary['questions']} test questions; answers up to {summary['max_new_tokens']} tokens."
        f" Retrieved context: top {retrieval['top_k']} chunks by `{retrieval['method']}` (gold chunk among them for"
        f" {retrieval['gold_chunk_retrieved']:.1%}). `none`: the question alone (closed book, as the paper's chatbot)."
        " Accuracies on true/false + yes/no items; groundedness against the gold chunk in every mode."
        " [95 % chunk-bootstrap interval]; changes marked * have paired p < alpha.",
        "",
        table,
        "",
    ])
