"""The evaluation report: markdown readable alone (chart embedded), built from `metrics` and `predictions`
of our test set (qa_v2) and of the cross-teacher set (the paper's published v3), side by side."""

from __future__ import annotations

import base64
import io
import random

from kaggle_qa.metrics.bootstrap import p_text
from kaggle_qa.metrics.summary import FORMAT_MATCHED, LABEL_GROUP
from kaggle_qa.reporting import cell, format_number, markdown_table

MODELS = ("base", "fine_tuned")
COLUMNS = ("base", FORMAT_MATCHED, "fine_tuned")  # the format-matched base: the base's answer cut at its first sentence
COLUMN_NAMES = {"base": "Base", FORMAT_MATCHED: "Base, first sentence", "fine_tuned": "Fine-tuned"}
HEADLINE_NAMES = {
    "rougeL": "ROUGE-L F1 (items with content)",
    "answer_loss": "Loss on the reference answers (lower is better)",
    "balanced_accuracy": "Label balanced accuracy, log-likelihood",
    "first_word_balanced_accuracy": "Label balanced accuracy, first word",
    "grounded_rate": "Grounded answers (empty / label-only count as not)",
    "hit_max_new_tokens_rate": "Answers cut at max_new_tokens",
    "copied_question_rate": "Answers that copy the question",
}
REPORT_ROWS = (  # (metric key, label)
    ("answer_loss", "Loss on answer tokens"),
    ("sequence_loss", "Loss on the whole sequence (paper's Table 3)"),
    ("first_word_accuracy", "Label accuracy (true/false, yes/no, NLI), first word"),
    ("first_word_balanced_accuracy", "  balanced, first word"),
    ("loglikelihood_accuracy", "Label accuracy (true/false, yes/no, NLI), log-likelihood"),
    ("loglikelihood_balanced_accuracy", "  balanced, log-likelihood"),
    ("best_constant_accuracy", "  best constant answer (accuracy)"),
    ("best_constant_balanced_accuracy", "  best constant answer (balanced accuracy)"),
    ("rouge1", "ROUGE-1 F1"),
    ("rouge2", "ROUGE-2 F1"),
    ("rougeL", "ROUGE-L F1"),
    ("bleu", "BLEU (sacrebleu, corpus)"),
    ("semantic_similarity", "Semantic similarity (MiniLM cosine)"),
    ("bertscore_f1", "BERTScore F1 (MiniLM)"),
    ("answer_words", "Answer length (words)"),
    ("reference_words", "Reference length (words)"),
    ("length_ratio", "Answer / reference length"),
    ("grounded_rate", "Grounded answers (each sentence backed by one context sentence; empty/label-only = not)"),
    ("label_only_rate", "Label-only or empty answers (\"True.\", \"No.\": nothing grounded)"),
    ("support", "Mean support in the best supporting sentence"),
    ("copied_question_rate", "Answers that copy the question"),
    ("invented_reference_rate", "Answers with an invented reference"),
    ("hit_max_new_tokens_rate", "Answers cut at max_new_tokens"),
    ("stopped_on_repeat_rate", "Answers stopped at a loop (second copy dropped)"),
    ("empty_answer_rate", "Empty answers"),
    ("judge_score", "LLM judge score (1-5)"),
)
CHART_METRICS = (
    ("first_word_accuracy", "acc. (first word)"),
    ("loglikelihood_accuracy", "acc. (log-lik.)"),
    ("rouge1", "ROUGE-1"),
    ("rougeL", "ROUGE-L"),
    ("bleu", "BLEU/100"),
    ("semantic_similarity", "sem. sim."),
    ("bertscore_f1", "BERTScore"),
    ("grounded_rate", "grounded"),
)
PER_TASK_COLUMNS = ("rougeL", "semantic_similarity", "first_word_accuracy", "loglikelihood_accuracy",
                    "grounded_rate", "answer_words")
LABEL_TASKS = (LABEL_GROUP, "true_false", "yes_no", "nli")


def _with_interval(metrics: dict, label: str, group: str, key: str) -> str:
    if label not in metrics["metrics"]:
        return "–"
    value = metrics["metrics"][label][group].get(key)
    span = metrics["intervals"][label][group].get(key)
    if value is None:
        return "–"
    return f"{format_number(value)} [{format_number(span[0])}, {format_number(span[1])}]" if span else format_number(value)


def _change(metrics: dict, group: str, key: str, pair: str = "base→fine_tuned") -> str:
    """The change with its paired p ("p ≤ 0.002" at the resampling floor); unstarred: stars are the
    headline's, Holm-adjusted over its family."""
    change = metrics["changes"].get(pair, {}).get(group, {}).get(key)
    if not change:
        return "–"
    return f"{change['delta']:+.3f} ({p_text(change['p_value'], metrics['bootstrap']['resamples'])})"


def overall_table(metrics: dict, group: str = "overall") -> str:
    """Base, format-matched base, fine-tuned (each with its 95 % interval) and the change base → fine-tuned
    with its paired p-value (unadjusted: exploratory; the headline's changes are the tested family)."""
    rows = []
    labels = [label for label in COLUMNS if label in metrics["metrics"]]
    for key, name in REPORT_ROWS:
        if all(metrics["metrics"][label][group].get(key) is None for label in labels):
            continue
        change = "–" if key in ("best_constant_accuracy", "best_constant_balanced_accuracy", "reference_words") \
            else _change(metrics, group, key)
        rows.append([name, *(_with_interval(metrics, label, group, key) for label in labels), change])
    return markdown_table(["Metric", *(f"{COLUMN_NAMES[label]} [95 % CI]" for label in labels),
                           "Change base → fine-tuned (paired p, unadjusted)"], rows, "l" + "r" * (len(labels) + 1))


def _headline_change(change: dict | None, resamples: int) -> str:
    if not change:
        return "–"
    mark = " **\\***" if change.get("significant") else ""
    return (f"{change['delta']:+.3f}{mark} ({p_text(change['p_value'], resamples)}; "
            f"Holm {format_number(change['p_holm'])})")


def headline_table(sets: list[tuple[str, dict]]) -> str:
    """One row per headline metric and test set (``metrics["headline"]``): the three models, the best
    constant answer beside a label accuracy, and both changes with paired p and Holm-adjusted p."""
    rows = []
    for name, metrics in sets:
        head = metrics.get("headline") or {}
        for row in head.get("rows", []):
            what = HEADLINE_NAMES.get(row["metric"], row["metric"])
            if row["group"] != "overall":
                what += f" ({row['group']}, {row['n']} items)"
            constant = row.get("best_constant")
            constant_cell = (f"{format_number(constant['value'])} ({constant['answer']})"
                             if constant and constant.get("value") is not None else "–")
            rows.append([name, what, *(format_number(row["values"].get(label)) for label in COLUMNS), constant_cell,
                         _headline_change(row["changes"].get("base→fine_tuned"), head["resamples"]),
                         _headline_change(row["changes"].get(f"{FORMAT_MATCHED}→fine_tuned"), head["resamples"])])
    return markdown_table(["Test set", "Metric", "Base", "Base, first sentence", "Fine-tuned", "Best constant answer",
                           "Change vs base", "Change vs base, first sentence"], rows, "llrrrrrr")


def label_table(metrics: dict) -> str:
    """Accuracy by log-likelihood and by first word per labelled task, with the share of each predicted label."""
    rows = []
    for group in LABEL_TASKS:
        if group not in metrics["metrics"]["base"] or "choice_items" not in metrics["metrics"]["base"][group]:
            continue
        for label in MODELS:
            values = metrics["metrics"][label][group]
            shares = lambda prefix: ", ".join(  # noqa: E731
                f"{key.removeprefix(prefix)} {values[key]:.2f}" for key in sorted(values) if key.startswith(prefix)
            )
            rows.append([group, label.replace("_", "-"), values["choice_items"],
                         _with_interval(metrics, label, group, "loglikelihood_accuracy"),
                         _with_interval(metrics, label, group, "loglikelihood_balanced_accuracy"),
                         _with_interval(metrics, label, group, "first_word_accuracy"),
                         _with_interval(metrics, label, group, "first_word_balanced_accuracy"),
                         f"{format_number(values.get('best_constant_accuracy'))} ({values.get('best_constant')}; "
                         f"balanced {format_number(values.get('best_constant_balanced_accuracy'))})",
                         shares("loglikelihood_share_"), shares("first_word_share_")])
    return markdown_table(["Task", "Model", "Items", "Acc. log-lik. [CI]", "Balanced log-lik. [CI]",
                           "Acc. first word [CI]", "Balanced first word [CI]", "Best constant answer",
                           "Predicted labels (log-lik.)", "Predicted labels (first word)"], rows, "llrrrrrrll")


def side_by_side(ours: dict, cross: dict) -> str:
    """Fine-tuned minus base on our v2 and on the cross-teacher set: a model that learned our generator
    and not the docs gains on the first only."""
    rows = []
    for key, name in REPORT_ROWS:
        cells = []
        for metrics in (ours, cross):
            if metrics.get("skipped") or metrics["metrics"]["base"]["overall"].get(key) is None:
                cells += ["–", "–"]
                continue
            cells += [f"{format_number(metrics['metrics']['base']['overall'][key])} → "
                      f"{format_number(metrics['metrics']['fine_tuned']['overall'][key])}", _change(metrics, "overall", key)]
        if any(c != "–" for c in cells):
            rows.append([name, *cells])
    return markdown_table(["Metric", "ours (qa_v2): base → fine-tuned", "change", "cross-teacher: base → fine-tuned",
                           "change"], rows, "lrrrr")


def bar_chart(ours: dict, cross: dict):
    """Grouped bars of the 0-1 metrics, base vs fine-tuned, on each evaluated test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [(name, m) for name, m in (("ours", ours), ("cross-teacher", cross)) if not m.get("skipped")]
    figure, axes = plt.subplots(1, len(sets), figsize=(10 * len(sets), 4.2), squeeze=False)
    for axis, (name, metrics) in zip(axes[0], sets):
        overall = {label: metrics["metrics"][label]["overall"] for label in MODELS}
        shown = [(key, text) for key, text in CHART_METRICS if overall["base"].get(key) is not None]
        width = 0.38
        for offset, label in ((-width / 2, "base"), (width / 2, "fine_tuned")):
            values = [(overall[label][key] or 0.0) / (100 if key == "bleu" else 1) for key, _ in shown]
            bars = axis.bar([i + offset for i in range(len(shown))], values, width, label=label.replace("_", "-"))
            axis.bar_label(bars, fmt="%.2f", fontsize=7)
        axis.set_xticks(range(len(shown)), [text for _, text in shown], rotation=20, ha="right")
        axis.set_ylim(0, 1.05)
        axis.set_title(f"{name}: base vs fine-tuned on {metrics['run']['rows']} questions")
        axis.legend()
    figure.tight_layout()
    return figure


def _normalised_question(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def select_samples(predictions: list[dict], paper_questions: list[str], n: int, seed: int) -> list[dict]:
    """The paper's Table 4 questions found in the test set, then `n` more drawn with `seed`."""
    wanted = {_normalised_question(question) for question in paper_questions}
    paper = [record for record in predictions if _normalised_question(record["question"]) in wanted]
    rest = [record for record in predictions if record not in paper]
    sample = random.Random(seed).sample(rest, min(n, len(rest)))
    return [{**record, "from_paper": True} for record in paper] + [{**record, "from_paper": False} for record in sample]


def _run_lines(metrics: dict) -> list[str]:
    run = metrics["run"]
    identity = run["base_model"]
    base_run = run["base_results"]
    reuse = (f"**reused** from `base_answers` version {base_run['reused_from']} (key `{base_run['key']}`): the base "
             "model was not run" if base_run.get("reused_from") else f"computed (key `{base_run['key']}`)")
    return [
        f"- Questions: **{run['rows']}** from {metrics['metrics']['base']['overall']['chunks']} chunks; base model "
        f"`{identity['name']}` ({identity['architecture']}, config {identity['config_sha256']}); adapter `{run['adapter']}`"
        + (f" at strength **{run['adapter_strength']:g}** (the share of the trained weight change kept, chosen on "
           "answers written by someone else: train_metrics.json, `strength`)" if run.get("adapter_strength") is not None else ""),
        f"- Numerics: **{run.get('numerics') or run['dtype']}**: base and fine-tuned are computed at the same "
        "precision, so a change is the adapter's.",
        f"- Inference: {run['dtype']} weights, {run.get('compute_dtype', run['dtype'])} compute on {run['device_type']}, batch {run['batch_size']}, greedy, max_new_tokens "
        f"{run['max_new_tokens']}, max_length {run['max_length']} and prompt template v{run['prompt_template_version']} "
        "(both read from the adapter's training_params.json); "
        + "; ".join(f"{label}: {s['answers_per_second']} items/s ({s['seconds']} s)" for label, s in run["speed"].items()),
        f"- Base results: {reuse}.",
        "- Whole-sequence loss (the paper's, an LM head over every prompt position): "
        + ("**on**." if run["whole_sequence_loss"] else "**off** (default; `evaluate.whole_sequence_loss=true` turns it on)."),
    ]


def _test_set_section(title: str, metrics: dict) -> list[str]:
    if metrics.get("skipped"):
        return [f"## {title}", "", "Not evaluated (its `limit` is 0).", ""]
    boot = metrics["bootstrap"]
    lines = [f"## {title}", "", *_run_lines(metrics), "",
             f"Intervals: {boot['confidence']:.0%} percentile bootstrap over **chunks** ({boot['resamples']} "
             f"resamples, seed {boot['seed']}); changes: paired bootstrap p, unadjusted (the starred, Holm-adjusted "
             "family is the headline's). ROUGE, BLEU, similarity and loss count items whose reference says more than "
             f"a label ({metrics['metrics']['base']['overall'].get('content_items')} of "
             f"{metrics['metrics']['base']['overall']['n']}); labelled items are scored on their label.", "",
             overall_table(metrics), ""]
    if "choice_items" in metrics["metrics"]["base"]["overall"]:
        lines += ["### Labelled items: accuracy and predicted labels", "", label_table(metrics), ""]
    lines += ["### Per task type (base → fine-tuned)", ""]
    rows = []
    for group in metrics["metrics"]["base"]:
        cells = [f"{format_number(metrics['metrics']['base'][group].get(key))} → "
                 f"{format_number(metrics['metrics']['fine_tuned'][group].get(key))}" for key in PER_TASK_COLUMNS]
        rows.append([group, metrics["metrics"]["base"][group]["n"], *cells])
    lines += [markdown_table(["Task type", "n", *PER_TASK_COLUMNS], rows, "lr" + "r" * len(PER_TASK_COLUMNS)), ""]
    return lines


def build_report(ours: dict, ours_predictions: list[dict], cross: dict, cross_predictions: list[dict], params: dict,
                 *assistant_sections: str):
    """A self-contained markdown report (chart embedded) and the chart as a figure; `assistant_sections`
    (the retrieval table, the three context modes) are appended as they are."""
    figure = bar_chart(ours, cross) if not (ours.get("skipped") and cross.get("skipped")) else None
    lines = ["# Evaluation report: base vs fine-tuned", ""]
    sets = [(name, m) for name, m in (("ours (qa_v2)", ours), ("cross-teacher", cross)) if not m.get("skipped")]
    if sets:
        head = sets[0][1]["headline"]
        lines += ["## Headline", "",
                  "Base, the base's answer cut at its first sentence (the fine-tuned model's format, no extra model "
                  "pass), and fine-tuned, at the same numerics. Label accuracy is **balanced** (mean of per-label "
                  "accuracy: any constant answer scores 0.5 on true/false), shown beside the best constant answer. "
                  f"**\\*** = Holm-adjusted p ≤ {head['alpha']} over the family of headline changes of that test set "
                  f"({head['correction']}); with {head['resamples']} resamples no p can be below "
                  f"{format_number(head['p_floor'])}. The losses and log-likelihood choices of the first-sentence "
                  "base are the base's (not tested twice).", "", headline_table(sets), ""]
    if not ours.get("skipped") and not cross.get("skipped"):
        lines += ["## Our test set and the cross-teacher set, side by side", "",
                  "A gain on ours (same generator as the training data) that does not show on the cross-teacher set "
                  "(questions written by the paper's LLM teachers over the same docs) means the model learned our "
                  "generator, not the docs.", "", side_by_side(ours, cross), ""]
    lines += _test_set_section("Our test set (qa_v2)", ours)
    lines += _test_set_section("Cross-teacher set (qa_cross_teacher: the paper's published v3)", cross)
    if figure is not None:
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=110)
        lines += ["## Chart", "", f"![Base vs fine-tuned](data:image/png;base64,{base64.b64encode(png.getvalue()).decode('ascii')})", ""]
    for title, predictions in (("our test set", ours_predictions), ("the cross-teacher set", cross_predictions)):
        if predictions:
            lines += _samples(title, predictions, params)
    for section in assistant_sections:
        if section:
            lines += [section.strip(), ""]
    lines += _definitions(ours if not ours.get("skipped") else cross)
    return "\n".join(lines), figure


def _samples(title: str, predictions: list[dict], params: dict) -> list[str]:
    samples = select_samples(predictions, params["paper_table4_questions"], **params["samples"])
    rows = [[f"{n}{'*' if r['from_paper'] else ''}", r["task_type"], r["question"], r["reference"], r["base_answer"],
             r["fine_tuned_answer"]] for n, r in enumerate(samples, start=1)]
    return [f"## Sample answers on {title} (the paper's Table 4 style)", "",
            f"The paper's own Table 4 questions found in this test set come first (marked *), then "
            f"{params['samples']['n']} questions drawn with seed {params['samples']['seed']}.", "",
            markdown_table(["#", "Task", "Question", "Expected answer", "Base answer", "Fine-tuned answer"], rows,
                           limit=params["max_cell_chars"]), ""]


def _definitions(metrics: dict) -> list[str]:
    threshold = metrics["definitions"]["groundedness"]["support_threshold"]
    choices = ", ".join(f"{task}: {'/'.join(words)}" for task, words in metrics["definitions"]["choices"].items())
    return [
        "## Definitions",
        "",
        "- **Loss on answer tokens**: mean negative log-likelihood per answer token (answer + EOS) given the prompt, "
        "teacher-forced on the reference answer; **whole-sequence loss** also counts the prompt tokens, as the "
        "paper's SFT loss did (Table 3).",
        "- **Label accuracy** on items whose reference starts with a label, as lm-evaluation-harness scores BoolQ: "
        "*first word* = exact match of the normalised first word of the generated answer (\"True.\" = \"true\"); "
        f"*log-likelihood* = the candidate ({choices}) whose whole token sequence is most probable after the prompt "
        "(full continuation log-likelihood, never a sub-word prefix). *Balanced* accuracy is the mean over gold labels "
        "(per task type) of the share of that label's items answered right: a constant answer scores 0.5 on a "
        "two-label task whatever the label mix. The *best constant answer* gives every item the same candidate "
        "position (always True/Yes, or always False/No): on one task its majority label, on true/false + yes/no "
        "together the better of always-positive and always-negative. *Predicted labels*: the share of each label "
        "among the model's choices, so a model that always says \"True\" shows a share near 1.",
        "- **Scored on the label**: an item whose reference is only a label (\"False.\") is scored by its label "
        "accuracy and left out of ROUGE, BLEU, similarity and answer loss, which then measure content, not style.",
        "- **ROUGE** (rouge_score, stemmed F1), **BLEU** (sacrebleu corpus BLEU, 0-100), **semantic similarity** "
        "(cosine of all-MiniLM-L6-v2 embeddings) and **BERTScore** F1 (same encoder, no rescaling) compare each "
        "answer with its reference. An empty answer or reference scores 0 against a non-empty one and the maximum "
        "against an empty one; empty answers are counted.",
        f"- **Grounded**: every sentence of the answer (its label word aside) has a supporting context sentence "
        f"that holds at least {threshold:.0%} of its content words (stemmed; `kaggle_qa.text.support`) and carries "
        "its logic: each negation, quantifier and number of the answer sentence is in that context sentence, and a "
        "negation of the context sentence is in the answer. The question never counts. Empty and label-only answers "
        "are **not grounded** (they stay in the denominator). *Copies the question*: the answer's and the question's "
        "content words cover each other (flagged whether grounded or not).",
        "- **Base, first sentence**: the base model's own answer cut after its first sentence (a bare leading label "
        "keeps the sentence after it), scored like the others: the base in the fine-tuned model's format. Its "
        "losses and log-likelihood choices are the base's.",
        "- **Invented reference**: the answer cites a URL, a section number, a \"Reference:/Source:\" text or a "
        "quoted title after \"refer to/see/documentation on\" that does not occur in the context.",
        "- **Intervals** resample documentation chunks, not rows (rows of one chunk are not independent); "
        "**p** is the paired bootstrap p-value of the change (same chunk draws for both models); with R resamples "
        "it is at least 2/(R+1), printed \"p ≤ …\" there. Stars mark the headline's changes whose Holm-adjusted p "
        "(over all headline changes of the test set) is at most alpha.",
        "- **LLM judge** (only when an endpoint is configured): the judge model grades each answer 1-5 against the "
        "passage and the reference (prompt in `pipelines/evaluate/judge.py`).",
        "",
    ]
