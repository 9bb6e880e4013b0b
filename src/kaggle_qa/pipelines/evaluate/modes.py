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

The base model's results of a mode do not depend on the adapter: each mode's are saved in
``context_modes_base_answers`` under a :func:`~.cache.base_results_key` over the mode's rows
(contexts included) and settings, and reused from ``context_modes_base_answers_cache`` when the
key matches (``evaluate.reuse_base_results: false`` recomputes them), as ``answer_base`` does.
"""

from __future__ import annotations

import hashlib
import json
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

from .cache import base_results_key
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


def mode_base_key(settings: dict, mode: str, mode_rows: list[dict], context_modes: dict) -> tuple[str, dict]:
    """The base results key of one mode: base model + weights, the mode's rows as shown (contexts
    included), the inference settings with the context modes' max_new_tokens, the mode and limit."""
    key_rows = [{"id": str(row.get("id", index)), **{field: row[field] for field in
                                                     ("task_type", "input", "instruction", "output")}}
                for index, row in enumerate(mode_rows)]
    mode_settings = {**settings, "max_new_tokens": context_modes["max_new_tokens"], "whole_sequence_loss": False}
    return base_results_key(settings["base_model"], settings["base_weights"], key_rows, mode_settings,
                            extra={"context_mode": mode, "limit": context_modes.get("limit")})


def cached_modes(cache: dict | None) -> dict[str, dict]:
    """Every mode entry of every saved ``context_modes_base_answers`` version by its key (the newest
    version holding a key wins), each with the version it was saved in (``saved_version``)."""
    found: dict[str, dict] = {}
    for record in sorted((cache or {}).values(), key=lambda record: record["saved_version"]):
        for entry in (record.get("modes") or {}).values():
            if isinstance(entry, dict) and entry.get("key") and "rows" in entry:
                found[entry["key"]] = {**entry, "saved_version": record["saved_version"]}
    return found


def evaluate_context_modes(
    base_model: str,
    adapter: str,
    test_set: list[dict],
    retrieval_index: dict,
    retrieval: dict,
    evaluate: dict,
    context_modes: dict,
    cache: dict | None = None,
) -> tuple[dict, str, dict]:
    """Gold / retrieved / no context × base / fine-tuned on the first `limit` questions.

    Per mode, both models' answers are scored by :func:`~kaggle_qa.metrics.scoring.score_answers`
    against the gold rows (so groundedness is against the gold chunk) and summarized by
    :func:`~kaggle_qa.metrics.summary.summarize`: the same metrics, chunk-bootstrap intervals
    and paired base → fine-tuned p-values as the rest of the report.

    The base model's results of a mode are reused from `cache` (``context_modes_base_answers_cache``)
    when its :func:`mode_base_key` matches a saved one and ``evaluate.reuse_base_results`` is not
    false; the base model is loaded only for the modes that are not. Returns the summary, its
    markdown table and the base results of every mode (saved as ``context_modes_base_answers``).
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
    mode_rows = {mode: [{**row, "input": context} for row, context in zip(rows, contexts[mode])] for mode in modes}
    keys = {mode: mode_base_key(settings, mode, mode_rows[mode], context_modes) for mode in modes}
    saved = cached_modes(cache) if evaluate.get("reuse_base_results", True) else {}
    base_entries: dict = {}
    for mode in modes:
        key, fields = keys[mode]
        if key in saved:
            entry = saved[key]
            logger.info("Context modes, %s context: base answers reused from context_modes_base_answers version %s "
                        "(key %s), the base model is not run", mode, entry["saved_version"], key)
            base_entries[mode] = {"key": key, "key_fields": fields, "rows": entry["rows"],
                                  "seconds": entry["seconds"], "reused_from": entry["saved_version"]}
    records: dict = {mode: {} for mode in modes}
    seconds: dict = {mode: {} for mode in modes}
    for model_label, adapter_dir in (("base", None), ("fine_tuned", adapter)):
        to_run = [mode for mode in modes if not (model_label == "base" and mode in base_entries)]
        evaluator = None
        if to_run:
            model = load_answer_model(base_model, adapter_dir, settings["dtype"])
            evaluator = Evaluator(model, tokenizer, batch_size=evaluate["batch_size"],
                                  max_new_tokens=context_modes["max_new_tokens"], max_length=settings["max_length"])
        for mode in modes:
            if mode in to_run:
                results, took = evaluator.run(evaluator.examples(mode_rows[mode]), choice_rows, whole_sequence=False,
                                              label=f"{model_label}, {mode} context")
                if model_label == "base":
                    key, fields = keys[mode]
                    base_entries[mode] = {"key": key, "key_fields": fields, "rows": results,
                                          "seconds": round(took, 1), "reused_from": None}
            else:
                results, took = base_entries[mode]["rows"], base_entries[mode]["seconds"]
            scores = score_answers(
                rows, [r["answer"] for r in results], semantic_similarity=evaluate["semantic_similarity"],
                bertscore=evaluate["bertscore"], groundedness=evaluate["groundedness"],
                choices=[r.get("choice") for r in results], label=f"{model_label} answers, {mode} context",
            )
            records[mode][model_label] = [{**result, **score} for result, score in zip(results, scores)]
            seconds[mode][model_label] = round(took, 1)
        evaluator = model = None  # free the weights before the next model loads
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
        "base_results": {mode: {"key": base_entries[mode]["key"], "reused_from": base_entries[mode]["reused_from"]}
                         for mode in modes},
        "answers": {mode: {label: [r["answer"] for r in records[mode][label]] for label in MODELS} for mode in modes},
    }
    logger.info("Context modes on %d questions: %s", len(rows), {
        mode: {label: per_mode[mode]["metrics"][label]["overall"].get("answer_loss") for label in MODELS}
        for mode in modes})
    base_answers = {
        "key": hashlib.sha256(json.dumps({mode: keys[mode][0] for mode in modes}, sort_keys=True).encode()).hexdigest()[:16],
        "modes": base_entries,
    }
    return summary, modes_markdown(summary), base_answers


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
    base_results = summary.get("base_results") or {}
    reuse = "; ".join(
        f"`{mode}` **reused** from `context_modes_base_answers` version {run['reused_from']} (key `{run['key']}`)"
        if run.get("reused_from") else f"`{mode}` computed (key `{run['key']}`)"
        for mode, run in base_results.items()
    )
    return "\n".join([
        "## Three context modes: gold, retrieved, none",
        "",
        f"The first {summary['questions']} test questions; answers up to {summary['max_new_tokens']} tokens."
        f" Retrieved context: top {retrieval['top_k']} chunks by `{retrieval['method']}` (gold chunk among them for"
        f" {retrieval['gold_chunk_retrieved']:.1%}). `none`: the question alone (closed book, as the paper's chatbot)."
        " Accuracies on true/false + yes/no items; groundedness against the gold chunk in every mode."
        " [95 % chunk-bootstrap interval]; changes marked * have paired p < alpha.",
        *([""] if reuse else []),
        *([f"Base model results: {reuse}"
           + ("; the base model was not run." if all(r.get("reused_from") for r in base_results.values()) else ".")]
          if reuse else []),
        "",
        table,
        "",
    ])
