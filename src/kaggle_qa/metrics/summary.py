"""Per-answer score records → metrics per group, each with a chunk-bootstrap interval,
and paired base → fine-tuned changes with p-values.

:func:`summarize` takes the test rows (each with ``task_type``, ``output`` and ``chunk``: the
documentation chunk it was made from) and, per model label, one record per row holding the
answer (``answer``) and its scores (from :func:`kaggle_qa.metrics.scoring.score_answers`, plus
inference fields such as ``answer_nll``/``answer_tokens``, ``choice``). It returns::

    {"metrics":   {label: {group: {name: value}}},          # groups: overall, each task type, true_false+yes_no
     "intervals": {label: {group: {name: [low, high]}}},
     "changes":   {"base→fine_tuned": {group: {name: {delta, ci, p_value, significant}}}},
     "bootstrap": {resamples, confidence, seed, alpha, unit: "chunk"}}
"""

from __future__ import annotations

import math
from collections import Counter

from sacrebleu.metrics import BLEU

from kaggle_qa.qa_schema import TASK_TYPES, first_word, group_key

from .bootstrap import ChunkBootstrap, Pooled, Ratio
from .scoring import is_choice_item

MEAN_SCORES = {  # reported name → per-item field; every one is a mean over the group's answers
    "rouge1": "rouge1",
    "rouge2": "rouge2",
    "rougeL": "rougeL",
    "semantic_similarity": "semantic_similarity",
    "bertscore_f1": "bertscore_f1",
    "answer_words": "answer_words",
    "reference_words": "reference_words",
    "length_ratio": "length_ratio",
    "support": "support",
    "grounded_rate": "grounded",
    "label_only_rate": "label_only",
    "invented_reference_rate": "invented_reference",
    "hit_max_new_tokens_rate": "hit_max_new_tokens",
    "empty_answer_rate": "empty_answer",
}
LABEL_GROUP = "true_false+yes_no"
_BLEU = BLEU()


def _groups(rows: list[dict]) -> dict[str, list[int]]:
    groups = {"overall": list(range(len(rows)))}
    for task_type in TASK_TYPES:
        members = [i for i, row in enumerate(rows) if row["task_type"] == task_type]
        if members:
            groups[task_type] = members
    labelled = [i for i, row in enumerate(rows) if row["task_type"] in ("true_false", "yes_no")]
    if labelled:
        groups[LABEL_GROUP] = labelled
    return groups


def _statistics(rows: list[dict], records: list[dict], choices: dict[str, list[str]]) -> dict:
    """name → Statistic for one model on one group's rows."""
    # A None per-item value is not counted (groundedness: a label-only answer claims nothing).
    stats = {
        name: Ratio([float(r[field] or 0.0) for r in records], [float(r[field] is not None) for r in records])
        for name, field in MEAN_SCORES.items()
    }
    stats["bleu"] = Pooled(
        _BLEU._extract_corpus_statistics([r["answer"] for r in records], [[row["output"] for row in rows]]),
        lambda summed: _BLEU._compute_score_from_stats(list(summed)).score,
    )
    if all("answer_nll" in r for r in records):
        stats["answer_loss"] = Ratio([r["answer_nll"] for r in records], [r["answer_tokens"] for r in records])
    if records and all("sequence_nll" in r for r in records):
        stats["sequence_loss"] = Ratio([r["sequence_nll"] for r in records], [r["sequence_tokens"] for r in records])
    if any("judge_score" in r for r in records):
        stats["judge_score"] = Ratio(
            [r.get("judge_score") or 0.0 for r in records], [float(r.get("judge_score") is not None) for r in records]
        )
    labelled = [float(is_choice_item(row, choices)) for row in rows]
    if any(labelled):
        stats["first_word_accuracy"] = Ratio([c * r["first_word_correct"] for c, r in zip(labelled, records)], labelled)
        if all("choice_correct" in r for r, c in zip(records, labelled) if c):
            stats["loglikelihood_accuracy"] = Ratio(
                [c * r.get("choice_correct", 0.0) for c, r in zip(labelled, records)], labelled
            )
        gold = [first_word(row["output"]) for row, c in zip(rows, labelled) if c]
        majority = Counter(gold).most_common(1)[0][0]
        stats["majority_baseline"] = Ratio([c * (first_word(row["output"]) == majority) for c, row in zip(labelled, rows)], labelled)
        words = sorted({first_word(word) for row in rows for word in choices.get(row["task_type"], [])})
        for word in words:  # share of each predicted label: "always True" shows as a share near 1
            stats[f"first_word_share_{word}"] = Ratio(
                [c * (first_word(r["answer"]) == word) for c, r in zip(labelled, records)], labelled
            )
            if "loglikelihood_accuracy" in stats:
                stats[f"loglikelihood_share_{word}"] = Ratio(
                    [c * (first_word(r.get("choice") or "") == word) for c, r in zip(labelled, records)], labelled
                )
    return stats


def _counts(rows: list[dict], records: list[dict], choices: dict[str, list[str]]) -> dict:
    counts = {
        "n": len(rows),
        "chunks": len({row["chunk"] for row in rows}),
        "hit_max_new_tokens_count": sum(bool(r["hit_max_new_tokens"]) for r in records),
        "empty_answers": sum(bool(r["empty_answer"]) for r in records),
        "empty_references": sum(not row["output"].strip() for row in rows),
    }
    labelled = [is_choice_item(row, choices) for row in rows]
    if any(labelled):
        counts["choice_items"] = sum(labelled)
        counts["reference_not_candidate_token"] = sum(
            1 for c, r in zip(labelled, records) if c and r.get("reference_is_candidate") is False
        )
    if any("judge_score" in r for r in records):
        counts["judge_unscored"] = sum(r.get("judge_score") is None for r in records)
    return counts


def _clean(value):
    return None if isinstance(value, float) and (math.isnan(value) or math.isinf(value)) else value


def summarize(
    rows: list[dict],
    models: dict[str, list[dict]],
    *,
    choices: dict[str, list[str]],
    bootstrap: dict,
    pairs: list[tuple[str, str]] = (("base", "fine_tuned"),),
) -> dict:
    """Metrics, 95 % chunk-bootstrap intervals and paired changes (see module docstring)."""
    resamples, confidence = bootstrap.get("resamples", 1000), bootstrap.get("confidence", 0.95)
    seed, alpha = bootstrap.get("seed", 0), bootstrap.get("alpha", 0.05)
    metrics = {label: {} for label in models}
    intervals = {label: {} for label in models}
    changes = {f"{before}→{after}": {} for before, after in pairs if before in models and after in models}
    for group, members in _groups(rows).items():
        group_rows = [rows[i] for i in members]
        boot = ChunkBootstrap([row["chunk"] for row in group_rows], resamples, seed, confidence)
        stats = {}
        for label, records in models.items():
            group_records = [records[i] for i in members]
            stats[label] = _statistics(group_rows, group_records, choices)
            values = {name: boot.point(stat) for name, stat in stats[label].items()}
            spans = {name: boot.interval(stat) for name, stat in stats[label].items()}
            if values.get("answer_loss") is not None:
                values["answer_perplexity"] = math.exp(min(values["answer_loss"], 700.0))
                spans["answer_perplexity"] = [math.exp(min(v, 700.0)) for v in spans["answer_loss"]]
            metrics[label][group] = {**_counts(group_rows, group_records, choices), **{k: _clean(v) for k, v in values.items()}}
            intervals[label][group] = spans
        for before, after in pairs:
            if before not in models or after not in models:
                continue
            shared = sorted(set(stats[before]) & set(stats[after]) - {"majority_baseline"})
            group_changes = {}
            for name in shared:
                change = boot.paired(stats[before][name], stats[after][name])
                if change is not None:
                    group_changes[name] = {**change, "significant": change["p_value"] < alpha}
            changes[f"{before}→{after}"][group] = group_changes
    return {
        "metrics": metrics,
        "intervals": intervals,
        "changes": changes,
        "bootstrap": {"unit": "chunk", "resamples": resamples, "confidence": confidence, "seed": seed, "alpha": alpha},
    }


def chunk_key(row: dict) -> str:
    """The chunk a row was made from (`qa_schema.group_key`: its `chunk_id`, else a hash of its context)."""
    return group_key(row)

