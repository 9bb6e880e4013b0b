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

from sacrebleu.metrics import BLEU

from kaggle_qa.qa_schema import TASK_TYPES, first_word, group_key
from kaggle_qa.text import strip_label

from .bootstrap import ChunkBootstrap, Pooled, Ratio, holm, p_floor, p_text
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
    "copied_question_rate": "copied_question",
    "hit_max_new_tokens_rate": "hit_max_new_tokens",
    "stopped_on_repeat_rate": "stopped_on_repeat",
    "empty_answer_rate": "empty_answer",
}
LABEL_GROUP = "true_false+yes_no"
FORMAT_MATCHED = "base_first_sentence"  # the base model's answer cut at its first sentence (no extra model pass)
PAIRS = (("base", "fine_tuned"), (FORMAT_MATCHED, "fine_tuned"))
NOT_COMPARED = {"best_constant_accuracy", "best_constant_balanced_accuracy", "reference_words"}
# The report's headline: (group, metric, lower is better). Its changes are the family that is starred,
# Holm-adjusted together; every other change in the report is shown with its raw p and no star.
HEADLINE = (
    ("overall", "rougeL", False),
    ("overall", "answer_loss", True),
    (LABEL_GROUP, "balanced_accuracy", False),
    (LABEL_GROUP, "first_word_balanced_accuracy", False),
    ("overall", "grounded_rate", False),
)
SAME_AS_BASE = {"answer_loss", "sequence_loss", "balanced_accuracy", "loglikelihood_accuracy",
                "loglikelihood_balanced_accuracy"}  # the format-matched base's equal the base's by construction
HEADLINE_DESCRIPTIVE = (("overall", "hit_max_new_tokens_rate"), ("overall", "copied_question_rate"))
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


def _content_items(rows: list[dict]) -> list[float]:
    """1.0 for a row whose reference says something beyond a label word, 0.0 for a bare label ("False.")
    or an empty reference: text metrics (ROUGE, BLEU, similarity, answer loss) are computed over content
    items only, so that a bare-label reference does not score the answer's style. Labelled items are
    scored on their label (accuracies) either way."""
    return [float(bool(strip_label(row["output"])[1].strip())) for row in rows]


def _gold_class(row: dict) -> str:
    return f"{row['task_type']}:{first_word(row['output'])}"


def _balanced(classes: list[str], labelled: list[float], correct: list[float]) -> Pooled | None:
    """Balanced accuracy: the mean over gold labels (per task type: true_false:true, yes_no:no ...) of
    the share of that label's items answered right. A constant answer scores 1/(labels) of each task."""
    names = sorted({cls for cls, c in zip(classes, labelled) if c})
    if not names:
        return None
    index = {name: k for k, name in enumerate(names)}
    vectors = []
    for cls, c, right in zip(classes, labelled, correct):
        vector = [0.0] * (2 * len(names))
        if c:
            vector[index[cls]] = 1.0
            vector[len(names) + index[cls]] = float(right)
        vectors.append(vector)

    def score(summed, k=len(names)):
        recalls = [summed[k + j] / summed[j] for j in range(k) if summed[j] > 0]
        return sum(recalls) / len(recalls) if recalls else float("nan")

    return Pooled(vectors, score)


def best_constant(rows: list[dict], choices: dict[str, list[str]]) -> tuple[str, list[float]] | None:
    """The best constant answer of a group of labelled items and its per-item correctness.

    A constant answer gives every item the k-th candidate of its task type (k = 0: "True"/"Yes"/
    "Entailment", k = 1: "False"/"No"/"Contradiction", k = 2: "Neutral"); the best is the k that is right
    most often. On one task type that is its majority label; on true/false + yes/no together it is
    "always the positive" or "always the negative" label, never a majority over four labels.
    """
    labelled = [is_choice_item(row, choices) for row in rows]
    if not any(labelled):
        return None
    width = max(len(choices.get(row["task_type"], [])) for row, c in zip(rows, labelled) if c)
    best = None
    for k in range(width):
        right = [float(c and k < len(choices[row["task_type"]])
                       and first_word(choices[row["task_type"]][k]) == first_word(row["output"]))
                 for row, c in zip(rows, labelled)]
        if best is None or sum(right) > sum(best[1]):
            words = sorted({choices[row["task_type"]][k] for row, c in zip(rows, labelled)
                            if c and k < len(choices[row["task_type"]])}, key=str.lower)
            best = ("always " + "/".join(words), right)
    return best


def _statistics(rows: list[dict], records: list[dict], choices: dict[str, list[str]]) -> dict:
    """name → Statistic for one model on one group's rows."""
    content = _content_items(rows)
    text_metrics = {"rouge1", "rouge2", "rougeL", "semantic_similarity", "bertscore_f1"}
    stats = {}
    for name, field in MEAN_SCORES.items():
        if records and not all(field in r for r in records):
            continue  # a score this run did not record
        weight = content if name in text_metrics else [1.0] * len(rows)
        # A None per-item value is not counted (e.g. the support of an answer with no content word).
        stats[name] = Ratio([w * float(r[field] or 0.0) for w, r in zip(weight, records)],
                            [w * float(r[field] is not None) for w, r in zip(weight, records)])
    if any(content):  # no item with content: BLEU is undefined, not 0
        stats["bleu"] = Pooled(
            [[w * x for x in vector] for w, vector in zip(content, _BLEU._extract_corpus_statistics(
                [r["answer"] for r in records], [[row["output"] for row in rows]]))],
            lambda summed: _BLEU._compute_score_from_stats(list(summed)).score,
        )
    if all("answer_nll" in r for r in records):
        stats["answer_loss"] = Ratio([w * r["answer_nll"] for w, r in zip(content, records)],
                                     [w * r["answer_tokens"] for w, r in zip(content, records)])
    if records and all("sequence_nll" in r for r in records):
        stats["sequence_loss"] = Ratio([r["sequence_nll"] for r in records], [r["sequence_tokens"] for r in records])
    if any("judge_score" in r for r in records):
        stats["judge_score"] = Ratio(
            [r.get("judge_score") or 0.0 for r in records], [float(r.get("judge_score") is not None) for r in records]
        )
    labelled = [float(is_choice_item(row, choices)) for row in rows]
    if any(labelled):
        classes = [_gold_class(row) for row in rows]
        stats["first_word_accuracy"] = Ratio([c * r["first_word_correct"] for c, r in zip(labelled, records)], labelled)
        stats["first_word_balanced_accuracy"] = _balanced(classes, labelled, [r["first_word_correct"] for r in records])
        if all("choice_correct" in r for r, c in zip(records, labelled) if c):
            correct = [r.get("choice_correct", 0.0) for r in records]
            stats["loglikelihood_accuracy"] = Ratio([c * x for c, x in zip(labelled, correct)], labelled)
            stats["loglikelihood_balanced_accuracy"] = _balanced(classes, labelled, correct)
            stats["balanced_accuracy"] = stats["loglikelihood_balanced_accuracy"]
        _, constant = best_constant(rows, choices)
        stats["best_constant_accuracy"] = Ratio(constant, labelled)
        stats["best_constant_balanced_accuracy"] = _balanced(classes, labelled, constant)
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
        "content_items": int(sum(_content_items(rows))),
    }
    labelled = [is_choice_item(row, choices) for row in rows]
    if any(labelled):
        counts["choice_items"] = sum(labelled)
        counts["best_constant"] = best_constant(rows, choices)[0]
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
            values = {name: boot.point(stat) for name, stat in stats[label].items() if stat is not None}
            spans = {name: boot.interval(stat) for name, stat in stats[label].items() if stat is not None}
            if values.get("answer_loss") is not None:
                values["answer_perplexity"] = math.exp(min(values["answer_loss"], 700.0))
                spans["answer_perplexity"] = [math.exp(min(v, 700.0)) for v in spans["answer_loss"]]
            metrics[label][group] = {**_counts(group_rows, group_records, choices), **{k: _clean(v) for k, v in values.items()}}
            intervals[label][group] = spans
        for before, after in pairs:
            if before not in models or after not in models:
                continue
            shared = sorted(set(stats[before]) & set(stats[after]) - NOT_COMPARED
                            - (SAME_AS_BASE if before == FORMAT_MATCHED else set()))
            group_changes = {}
            for name in shared:
                if stats[before][name] is None or stats[after][name] is None:
                    continue
                change = boot.paired(stats[before][name], stats[after][name])
                if change is not None:
                    group_changes[name] = {**change, "p_text": p_text(change["p_value"], resamples)}
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



def headline(summary: dict, alpha: float | None = None) -> dict:
    """The headline table as data (``metrics["headline"]``): per headline metric, every model's value and
    interval, the best constant answer beside a label accuracy, and each change with its paired p, its
    Holm-adjusted p over the family of all headline changes of this test set, and whether it is starred.
    A change that is identical by construction (the format-matched base has the base's losses and
    log-likelihood choices) is not tested and not in the family."""
    boot = summary["bootstrap"]
    alpha = boot["alpha"] if alpha is None else alpha
    metrics, intervals, changes = summary["metrics"], summary["intervals"], summary["changes"]
    rows, family = [], []
    for group, name, lower_is_better in (*HEADLINE, *((g, n, None) for g, n in HEADLINE_DESCRIPTIVE)):
        values = {label: metrics[label].get(group, {}).get(name) for label in metrics}
        if all(value is None for value in values.values()):
            continue
        any_model = next(iter(metrics.values())).get(group, {})
        row = {"group": group, "metric": name, "n": any_model.get("n"), "lower_is_better": lower_is_better,
               "values": values, "intervals": {label: intervals[label].get(group, {}).get(name) for label in metrics},
               "changes": {}}
        if "accuracy" in name:
            constant = "best_constant_balanced_accuracy" if "balanced" in name else "best_constant_accuracy"
            row["best_constant"] = {"answer": any_model.get("best_constant"), "accuracy": any_model.get("best_constant_accuracy"),
                                    "balanced_accuracy": any_model.get("best_constant_balanced_accuracy"),
                                    "value": any_model.get(constant)}
        for pair, per_group in changes.items():
            change = per_group.get(group, {}).get(name)
            before = pair.split("→")[0]
            if not change or lower_is_better is None or (before == FORMAT_MATCHED and name in SAME_AS_BASE):
                continue
            row["changes"][pair] = dict(change)
            family.append(row["changes"][pair])
        rows.append(row)
    for change, adjusted in zip(family, holm([change["p_value"] for change in family])):
        change["p_holm"] = adjusted
        change["significant"] = adjusted <= alpha
    return {"rows": rows, "family_size": len(family), "alpha": alpha, "resamples": boot["resamples"],
            "p_floor": p_floor(boot["resamples"]),
            "correction": f"Holm over the {len(family)} headline changes of this test set"}
