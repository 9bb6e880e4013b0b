"""How well retrieval finds the answer, and where "the docs do not cover this" starts.

For every test question the gold chunk is the chunk it was written from (``row["chunk_id"]``).
:func:`evaluate_retrieval` ranks every chunk for every question with each method (dense,
BM25, hybrid; :mod:`kaggle_qa.retrieval`) and reports hit rate at 1/3/5 and mean reciprocal
rank. It also compares the relevance score (the best dense cosine, which the assistant
thresholds) of the in-domain test questions with that of off-topic questions
(``off_topic_questions``) and recommends the threshold that separates them best.
"""

from __future__ import annotations

import logging

import numpy as np
from tabulate import tabulate

from kaggle_qa.retrieval import METHODS, Retriever

logger = logging.getLogger(__name__)

CUTOFFS = (1, 3, 5)


def gold_ranks(rankings: list[np.ndarray], gold: list[int]) -> np.ndarray:
    """1-based rank of each question's gold chunk in its ranking."""
    return np.array([int(np.flatnonzero(order == g)[0]) + 1 for order, g in zip(rankings, gold)])


def rank_metrics(ranks: np.ndarray) -> dict:
    """hit@1/3/5 (share of questions whose gold chunk is in the top k) and MRR."""
    metrics = {f"hit@{k}": float(np.mean(ranks <= k)) for k in CUTOFFS}
    metrics["mrr"] = float(np.mean(1.0 / ranks))
    return metrics


def calibrate_threshold(in_domain: np.ndarray, off_topic: np.ndarray) -> dict:
    """The relevance threshold with the best balanced accuracy (answered in-domain, refused off-topic).

    Candidates are midpoints between neighbouring observed scores, so the chosen value lies
    strictly between an in-domain and an off-topic score rather than on one of them.
    """
    values = np.unique(np.concatenate([in_domain, off_topic]))
    candidates = (values[:-1] + values[1:]) / 2 if len(values) > 1 else values
    best = None
    for threshold in candidates:
        answered = float(np.mean(in_domain >= threshold))
        refused = float(np.mean(off_topic < threshold))
        score = (answered + refused) / 2
        if best is None or score > best["balanced_accuracy"]:
            best = {"threshold": float(threshold), "in_domain_answered": answered,
                    "off_topic_refused": refused, "balanced_accuracy": score}
    return best


def _quantiles(values: np.ndarray) -> dict:
    return {name: float(np.quantile(values, q)) for name, q in
            (("min", 0.0), ("p05", 0.05), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1.0))}


def evaluate_retrieval(
    retrieval_index: dict, test_set: list[dict], off_topic_questions: list[str], retrieval: dict, evaluate: dict
) -> tuple[dict, str]:
    """Hit rate / MRR per method on every test question, and the relevance-threshold calibration."""
    name = evaluate.get("test_set_name", "test set")
    if not off_topic_questions:
        raise ValueError("off_topic_questions is empty: the relevance threshold cannot be calibrated")
    retriever = Retriever(retrieval_index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    position = {chunk["chunk_id"]: i for i, chunk in enumerate(retriever.chunks)}
    without = sum(not row.get("chunk_id") for row in test_set)
    test_set = [row for row in test_set if row.get("chunk_id")]
    if without:
        logger.warning("%s: %d rows carry no chunk_id (e.g. the paper's published data): no gold chunk, not scored "
                       "for retrieval", name, without)
    if not test_set:
        reason = f"{name} has no row with a chunk_id: there is no gold chunk to find"
        return {"skipped": reason}, f"## Retrieval: is the gold chunk found?\n\nSkipped: {reason}.\n"
    missing = [(i, row.get("chunk_id")) for i, row in enumerate(test_set) if row.get("chunk_id") not in position]
    if missing:
        i, chunk_id = missing[0]
        raise ValueError(
            f"{name} row {i}: chunk_id {chunk_id!r} is not in retrieval_index ({len(missing)} rows like it);"
            " build the index and the test set from the same ingestion run"
        )
    questions = [row["instruction"] for row in test_set]
    gold = [position[row["chunk_id"]] for row in test_set]
    scores = retriever.scores(questions)
    per_method, per_task = {}, {}
    task_types = np.array([row.get("task_type", "unknown") for row in test_set])
    for method in METHODS:
        rankings = [np.argsort(-s[method], kind="stable") for s in scores]
        ranks = gold_ranks(rankings, gold)
        per_method[method] = rank_metrics(ranks)
        per_task[method] = {t: rank_metrics(ranks[task_types == t]) for t in sorted(set(task_types))}
    in_domain = np.array([s["dense"].max() for s in scores])
    off_topic = np.array([s["dense"].max() for s in retriever.scores(list(off_topic_questions))])
    calibration = calibrate_threshold(in_domain, off_topic)
    configured = retrieval["relevance_threshold"]
    result = {
        "test_set": name,
        "questions": len(test_set),
        "chunks": len(retriever.chunks),
        "encoder": retriever.encoder,
        "rrf_k": retrieval["rrf_k"],
        "methods": per_method,
        "per_task_type": per_task,
        "task_type_counts": {t: int(np.sum(task_types == t)) for t in sorted(set(task_types))},
        "best_method": max(METHODS, key=lambda m: (per_method[m]["mrr"], per_method[m]["hit@1"])),
        "configured_method": retrieval["method"],
        "relevance": {
            "in_domain": _quantiles(in_domain),
            "off_topic": _quantiles(off_topic),
            "off_topic_questions": len(off_topic),
            "recommended": calibration,
            "configured_threshold": configured,
            "configured_in_domain_answered": float(np.mean(in_domain >= configured)),
            "configured_off_topic_refused": float(np.mean(off_topic < configured)),
        },
    }
    logger.info("Retrieval on %d %s questions: %s", len(test_set), name, per_method)
    return result, retrieval_markdown(result)


def retrieval_markdown(result: dict) -> str:
    """The retrieval table and the threshold calibration as a markdown section."""
    rows = [[m, *(f"{result['methods'][m][f'hit@{k}']:.3f}" for k in CUTOFFS), f"{result['methods'][m]['mrr']:.3f}"]
            for m in METHODS]
    table = tabulate(rows, headers=["method", "hit@1", "hit@3", "hit@5", "MRR"], tablefmt="github")
    tasks = result["task_type_counts"]
    task_rows = [[t, n, *(f"{result['per_task_type'][m][t]['hit@1']:.3f}" for m in METHODS)] for t, n in tasks.items()]
    task_table = tabulate(task_rows, headers=["task type", "n", *(f"{m} hit@1" for m in METHODS)], tablefmt="github")
    rel = result["relevance"]
    dist_rows = [[group, *(f"{rel[group][q]:.3f}" for q in ("min", "p05", "p25", "median", "p75", "max"))]
                 for group in ("in_domain", "off_topic")]
    dist = tabulate(dist_rows, headers=["questions", "min", "p05", "p25", "median", "p75", "max"], tablefmt="github")
    rec = rel["recommended"]
    return "\n".join([
        "## Retrieval: is the gold chunk found?",
        "",
        f"{result['questions']} {result['test_set']} questions over {result['chunks']} chunks; gold chunk = the chunk"
        f" each question was written from. Encoder `{result['encoder']}`, reciprocal-rank fusion k = {result['rrf_k']}.",
        "",
        table,
        "",
        f"Best by MRR: **{result['best_method']}** (configured `retrieval.method`: `{result['configured_method']}`).",
        "",
        task_table,
        "",
        "### Relevance threshold (best dense cosine of any chunk)",
        "",
        dist,
        "",
        f"Recommended threshold {rec['threshold']:.3f}: answers {rec['in_domain_answered']:.1%} of in-domain"
        f" questions, refuses {rec['off_topic_refused']:.1%} of {rel['off_topic_questions']} off-topic questions."
        f" Configured `retrieval.relevance_threshold` {rel['configured_threshold']:.3f}: answers"
        f" {rel['configured_in_domain_answered']:.1%}, refuses {rel['configured_off_topic_refused']:.1%}.",
        "",
    ])
