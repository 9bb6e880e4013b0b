"""Chunk bootstrap intervals and paired p-values, and the summary built on them."""

from __future__ import annotations

import numpy as np
import pytest

from kaggle_qa.metrics.bootstrap import ChunkBootstrap, Pooled, Ratio, holm, p_floor, p_text
from kaggle_qa.metrics.summary import best_constant, chunk_key, headline, summarize


def test_resampling_chunks_keeps_correlated_rows_together():
    # two chunks of 50 rows: one all right, one all wrong. Rows are not independent, so the
    # interval must span what drawing either chunk twice gives (0 and 1); a row bootstrap
    # would claim roughly 0.40-0.60.
    chunks = ["a"] * 50 + ["b"] * 50
    correct = Ratio([1.0] * 50 + [0.0] * 50, [1.0] * 100)
    boot = ChunkBootstrap(chunks, resamples=2000, seed=0)
    assert boot.point(correct) == 0.5
    assert boot.interval(correct) == [0.0, 1.0]
    replicates = boot.replicates(correct)
    assert set(np.unique(replicates)) == {0.0, 0.5, 1.0}
    assert np.mean(replicates == 0.5) == pytest.approx(0.5, abs=0.05)  # P(one of each) = 1/2


def test_ratio_statistics_weight_by_tokens_and_skip_items_outside_the_subset():
    boot = ChunkBootstrap(["a", "a", "b"], resamples=10, seed=1)
    loss = Ratio([3.0, 1.0, 6.0], [1, 1, 3])  # token-weighted: 10 / 5
    assert boot.point(loss) == 2.0
    subset = Ratio([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])  # accuracy over the first item only
    assert boot.point(subset) == 1.0
    empty = ChunkBootstrap(["a"], resamples=5).point(Ratio([1.0], [0.0]))
    assert empty is None


def test_pooled_statistic_sums_vectors_before_scoring():
    boot = ChunkBootstrap(["a", "b"], resamples=50, seed=0)
    stat = Pooled([[1, 2], [3, 2]], lambda summed: summed[0] / summed[1])  # (1+3)/(2+2)
    assert boot.point(stat) == 1.0
    assert boot.interval(stat) == [0.5, 1.5]


def test_paired_p_value_small_for_a_consistent_gain_and_one_for_no_change():
    chunks = [f"c{k}" for k in range(20) for _ in range(3)]
    ones = [1.0] * 60
    base = Ratio([0.0] * 60, ones)
    tuned = Ratio([1.0 if i % 3 else 0.0 for i in range(60)], ones)  # 2/3 right in every chunk
    boot = ChunkBootstrap(chunks, resamples=999, seed=0)
    gain = boot.paired(base, tuned)
    assert gain["delta"] == pytest.approx(2 / 3)
    assert gain["ci"] == pytest.approx([2 / 3, 2 / 3])
    assert gain["p_value"] == pytest.approx(2 / 1000)  # no replicate at or below 0: (0 + 1) / (999 + 1), two-sided
    same = boot.paired(tuned, tuned)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_summary_has_an_interval_for_every_metric_and_marks_significance():
    rows, base, tuned = [], [], []
    for k in range(12):
        for j, (task, reference) in enumerate((("true_false", "True."), ("true_false", "False."), ("extractive_qa", "Teams merge."))):
            rows.append({"task_type": task, "output": reference, "chunk": f"c{k}"})
            record = dict(rouge1=0.1, rouge2=0.0, rougeL=0.1, semantic_similarity=0.2, bertscore_f1=0.3, answer_words=9,
                          reference_words=2, length_ratio=4.5, support=0.5, grounded=0.0, label_only=0.0, invented_reference=0.0,
                          hit_max_new_tokens=True, empty_answer=0.0, answer_nll=4.0, answer_tokens=2)
            base.append({**record, "answer": "True, it is.", "first_word_correct": float(j == 0), "choice": "True",
                         "choice_correct": float(j == 0)})
            good = reference if j < 2 else "Teams merge."
            tuned.append({**record, "answer": good, "rougeL": 0.9, "first_word_correct": float(j < 2), "choice": good.rstrip("."),
                          "choice_correct": float(j < 2), "answer_nll": 1.0, "hit_max_new_tokens": False})
    summary = summarize(rows, {"base": base, "fine_tuned": tuned}, choices={"true_false": ["True", "False"]},
                        bootstrap={"resamples": 200, "seed": 0})
    overall = summary["metrics"]["base"]["overall"]
    assert overall["n"] == 36 and overall["chunks"] == 12 and overall["choice_items"] == 24
    assert overall["first_word_accuracy"] == 0.5 and overall["best_constant_accuracy"] == 0.5
    assert overall["first_word_balanced_accuracy"] == 0.5 and overall["best_constant"] == "always True"
    assert overall["first_word_share_true"] == 1.0 and overall["loglikelihood_share_false"] == 0.0  # "always True" is visible
    assert summary["metrics"]["fine_tuned"]["true_false"]["first_word_share_true"] == 0.5
    # bare-label references ("True.") are scored on their label: ROUGE and loss count the 12 content items only
    assert overall["content_items"] == 12
    true_false = summary["metrics"]["base"]["true_false"]  # only bare labels: no text metric, label accuracy only
    assert true_false["rougeL"] is None and "bleu" not in true_false and true_false["answer_loss"] is None
    assert true_false["first_word_accuracy"] == 0.5
    assert overall["answer_loss"] == 2.0 and summary["metrics"]["fine_tuned"]["overall"]["answer_loss"] == 0.5
    assert overall["bleu"] >= 0 and "bleu" in summary["intervals"]["base"]["overall"]
    for name, value in overall.items():
        if isinstance(value, float) and name not in ("n",):
            assert name in summary["intervals"]["base"]["overall"], name
    change = summary["changes"]["base→fine_tuned"]["overall"]
    assert change["rougeL"]["delta"] == pytest.approx(0.8) and change["rougeL"]["p_text"] == "p ≤ 0.010"  # 2/201
    assert change["semantic_similarity"]["delta"] == 0 and change["semantic_similarity"]["p_value"] == 1.0
    assert change["loglikelihood_accuracy"]["p_value"] < 0.05 and change["answer_loss"]["delta"] == -1.5
    head = {(row["group"], row["metric"]): row for row in headline(summary)["rows"]}
    assert head[("overall", "rougeL")]["changes"]["base→fine_tuned"]["significant"]
    assert head[("true_false+yes_no", "balanced_accuracy")]["best_constant"]["value"] == 0.5
    assert set(summary["metrics"]["base"]) == {"overall", "true_false", "extractive_qa", "true_false+yes_no"}


def test_chunk_key_uses_the_chunk_id_else_the_context():
    assert chunk_key({"chunk_id": "abc", "input": "x"}) == "abc"
    assert chunk_key({"input": "x"}) == chunk_key({"input": "x"}) != chunk_key({"input": "y"})


def _labelled(task: str, gold: str, chunk: str) -> dict:
    return {"task_type": task, "output": f"{gold}.", "chunk": chunk}


def test_best_constant_of_true_false_plus_yes_no_is_always_negative_or_positive_never_a_four_label_majority():
    # 30 negative of 51 as in the issue: True 12, False 14, Yes 9, No 16. The 4-label majority ("No", 16/51)
    # scores 0.314; "always the negative label" scores 30/51 = 0.588.
    golds = [("true_false", "True")] * 12 + [("true_false", "False")] * 14 + [("yes_no", "Yes")] * 9 + [("yes_no", "No")] * 16
    rows = [_labelled(task, gold, f"c{i}") for i, (task, gold) in enumerate(golds)]
    choices = {"true_false": ["True", "False"], "yes_no": ["Yes", "No"]}
    name, right = best_constant(rows, choices)
    assert name == "always False/No" and sum(right) / len(rows) == pytest.approx(30 / 51)
    # a model that always says False/No: accuracy 0.588 but balanced accuracy 0.5 (chance made visible)
    records = [{"answer": "x", "hit_max_new_tokens": False, "empty_answer": 0.0, "first_word_correct": float(g in ("False", "No")), "choice": "x",
                "choice_correct": float(g in ("False", "No"))} for _, g in golds]
    summary = summarize(rows, {"base": records, "fine_tuned": records}, choices=choices, bootstrap={"resamples": 50})
    group = summary["metrics"]["base"]["true_false+yes_no"]
    assert group["loglikelihood_accuracy"] == pytest.approx(30 / 51) == group["best_constant_accuracy"]
    assert group["balanced_accuracy"] == pytest.approx(0.5) == group["best_constant_balanced_accuracy"]
    assert summary["metrics"]["base"]["true_false"]["best_constant"] == "always False"  # 14 of 26
    assert summary["metrics"]["base"]["yes_no"]["best_constant_accuracy"] == pytest.approx(16 / 25)


def test_p_values_at_the_resampling_floor_print_as_a_bound():
    assert p_floor(1000) == pytest.approx(2 / 1001)
    assert p_text(2 / 1001, 1000) == "p ≤ 0.002" and p_text(0.0312, 1000) == "p = 0.031"
    assert p_text(2 / 1601, 1600) == "p ≤ 0.002"  # 0.00125 rounds up, never down to a false bound
    boot = ChunkBootstrap([f"c{i}" for i in range(30)], resamples=1000, seed=0)
    change = boot.paired(Ratio([0.0] * 30, [1.0] * 30), Ratio([1.0] * 30, [1.0] * 30))
    assert change["p_value"] == pytest.approx(2 / 1001)  # a sure gain still gets p = 2/(R+1), never 0


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def test_starred_changes_under_a_noisy_null_keep_the_error_rate_at_alpha():
    """Two systems drawn from one distribution (correlated within chunks): over many repetitions, the
    family of 4 metrics is starred (Holm, alpha 0.05) in at most ~5 % of them, each metric alone too."""
    rng = np.random.default_rng(1)
    repetitions, chunks, per_chunk, metrics, alpha = 300, 30, 4, 4, 0.05
    chunk_of = [f"c{c}" for c in range(chunks) for _ in range(per_chunk)]
    family_errors = single_errors = 0
    for repetition in range(repetitions):
        boot = ChunkBootstrap(chunk_of, resamples=199, seed=repetition)
        p_values = []
        for _ in range(metrics):
            difficulty = np.repeat(rng.normal(0, 1, chunks), per_chunk)  # shared by both systems
            a, b = (rng.random(len(chunk_of)) < 1 / (1 + np.exp(-difficulty)) for _ in range(2))
            p_values.append(boot.paired(Ratio(a.astype(float), [1.0] * len(a)), Ratio(b.astype(float), [1.0] * len(b)))["p_value"])
        family_errors += any(p <= alpha for p in holm(p_values))
        single_errors += p_values[0] <= alpha
    # 3 standard errors above alpha for 300 repetitions: 0.05 + 3 * sqrt(0.05 * 0.95 / 300) = 0.088
    assert family_errors / repetitions <= 0.088, family_errors
    assert single_errors / repetitions <= 0.088, single_errors
