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

from kaggle_qa.assistant.core import adapter_max_length, load_answer_model
from kaggle_qa.metrics import load_metric
from kaggle_qa.modeling import load_tokenizer
from kaggle_qa.retrieval import Retriever

from .inference import Evaluator, candidate_token_ids, mean_loss

logger = logging.getLogger(__name__)

MODES = ("gold", "retrieved", "none")
MODELS = ("base", "fine_tuned")
REPORTED = ("answer_loss", "first_word_accuracy", "choice_accuracy", "rougeL", "semantic_similarity", "grounded_rate")


def contexts_for(rows: list[dict], retriever: Retriever, retrieval: dict) -> dict[str, list[str]]:
    """The context of every row in each mode, and whether retrieval found the gold chunk."""
    retrieved, found = [], []
    for row in rows:
        hits = retriever.retrieve(row["instruction"], retrieval["top_k"], retrieval["method"]).hits
        retrieved.append("\n\n".join(hit["text"] for hit in hits))
        found.append(any(hit["chunk_id"] == row.get("chunk_id") for hit in hits))
    return {"gold": [row["input"] for row in rows], "retrieved": retrieved, "none": [""] * len(rows), "_found": found}


def score_mode(rows: list[dict], answers: list[str], scores: list[dict], choice_rows: set[int], evaluate: dict) -> dict:
    """Per-row scores and their means for one model in one mode."""
    references = [row["output"] for row in rows]
    pairs = dict(predictions=answers, references=references)
    rouge = load_metric("qa_rouge").compute(**pairs)["per_item"]["rougeL"]
    similarity_params = evaluate.get("semantic_similarity", {})
    similarity = load_metric("semantic_similarity").compute(
        **pairs, model_path=similarity_params.get("model_path"), batch_size=similarity_params.get("batch_size", 64)
    )["per_item"]["semantic_similarity"]
    first_word = load_metric("first_word_accuracy").compute(**pairs)["per_item"]["correct"]
    grounded = load_metric("groundedness").compute(
        predictions=answers, contexts=[row["input"] for row in rows],
        support_threshold=evaluate.get("groundedness", {}).get("support_threshold", 0.8),
    )["per_item"]["grounded"]
    chosen = sorted(choice_rows)
    choice = load_metric("first_word_accuracy").compute(
        predictions=[scores[i]["choice"] for i in chosen], references=[references[i] for i in chosen]
    )["per_item"]["correct"] if chosen else []
    return {
        "answer_loss": mean_loss([s["answer_nll"] for s in scores], [s["answer_tokens"] for s in scores]),
        "first_word_accuracy": float(np.mean([first_word[i] for i in chosen])) if chosen else None,
        "choice_accuracy": float(np.mean(choice)) if chosen else None,
        "rougeL": float(np.mean(rouge)),
        "semantic_similarity": float(np.mean(similarity)),
        "grounded_rate": float(np.mean(grounded)),
        "per_row": [
            {"answer": a, "answer_nll": s["answer_nll"], "answer_tokens": s["answer_tokens"], "choice": s.get("choice"),
             "rougeL": r, "semantic_similarity": sim, "grounded": g}
            for a, s, r, sim, g in zip(answers, scores, rouge, similarity, grounded)
        ],
    }


def evaluate_context_modes(
    base_model: str,
    adapter: str,
    test_set: list[dict],
    retrieval_index: dict,
    retrieval: dict,
    evaluate: dict,
    context_modes: dict,
) -> tuple[dict, str]:
    """Gold / retrieved / no context × base / fine-tuned on the first `limit` questions."""
    rows = test_set[: context_modes["limit"]] if context_modes.get("limit") else list(test_set)
    if not rows:
        raise ValueError(f"{evaluate.get('test_set_name', 'test set')} is empty: nothing to evaluate")
    retriever = Retriever(retrieval_index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    contexts = contexts_for(rows, retriever, retrieval)
    tokenizer = load_tokenizer(base_model)
    candidates = candidate_token_ids(tokenizer, evaluate["choices"])
    choice_rows = {i for i, row in enumerate(rows) if row["task_type"] in candidates}
    max_length = adapter_max_length(adapter, evaluate["max_length"])
    results: dict = {model: {} for model in MODELS}
    for model_label, adapter_dir in (("base", None), ("fine_tuned", adapter)):
        model = load_answer_model(base_model, adapter_dir, evaluate.get("dtype", "auto"))
        evaluator = Evaluator(model, tokenizer, batch_size=evaluate["batch_size"],
                              max_new_tokens=context_modes["max_new_tokens"], max_length=max_length)
        for mode in context_modes.get("modes", MODES):
            mode_rows = [{**row, "input": context} for row, context in zip(rows, contexts[mode])]
            examples = evaluator.examples(mode_rows)
            generated, seconds = evaluator.generate(examples, f"{model_label}, {mode} context")
            scores = evaluator.score(examples, {i: candidates[rows[i]["task_type"]] for i in choice_rows},
                                     whole_sequence=False, label=f"{model_label}, {mode} context")
            results[model_label][mode] = score_mode(rows, [g["answer"] for g in generated], scores, choice_rows, evaluate)
            results[model_label][mode]["seconds"] = round(seconds, 1)
            logger.info("%s / %s context: %s", model_label, mode,
                        {k: results[model_label][mode][k] for k in REPORTED})
        del model
    found = contexts.pop("_found")
    summary = {
        "questions": len(rows),
        "limit": context_modes.get("limit"),
        "retrieval": {"method": retrieval["method"], "top_k": retrieval["top_k"],
                      "gold_chunk_retrieved": float(np.mean(found))},
        "max_new_tokens": context_modes["max_new_tokens"],
        "results": results,
        "rows": [{"instruction": r["instruction"], "output": r["output"], "task_type": r["task_type"],
                  "chunk_id": r.get("chunk_id")} for r in rows],
    }
    return summary, modes_markdown(summary)


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def modes_markdown(summary: dict) -> str:
    """One table: a row per (model, mode), a column per metric."""
    table_rows = [
        [model, mode, *(_fmt(summary["results"][model][mode][name]) for name in REPORTED)]
        for model in MODELS for mode in summary["results"][model]
    ]
    table = tabulate(table_rows, headers=["model", "context", *REPORTED], tablefmt="github")
    retrieval = summary["retrieval"]
    return "\n".join([
        "## Three context modes: gold, retrieved, none",
        "",
        f"The first {summary['questions']} test questions; answers up to {summary['max_new_tokens']} tokens."
        f" Retrieved context: top {retrieval['top_k']} chunks by `{retrieval['method']}` (gold chunk among them for"
        f" {retrieval['gold_chunk_retrieved']:.1%}). `none`: the question alone (closed book, as the paper's chatbot)."
        " Accuracies on true/false + yes/no items; groundedness against the gold chunk in every mode.",
        "",
        table,
        "",
    ])
