"""The evaluation report: markdown readable alone (chart embedded), built from `metrics` and `predictions`
of our test set (qa_v2) and of the cross-teacher set (the paper's published v3), side by side."""

from __future__ import annotations

import base64
import io
import random

from kaggle_qa.metrics.summary import LABEL_GROUP
from kaggle_qa.reporting import cell, format_number, markdown_table

MODELS = ("base", "fine_tuned")
REPORT_ROWS = (  # (metric key, label)
    ("answer_loss", "Loss on answer tokens"),
    ("sequence_loss", "Loss on the whole sequence (paper's Table 3)"),
    ("first_word_accuracy", "Label accuracy (true/false, yes/no, NLI), first word"),
    ("loglikelihood_accuracy", "Label accuracy (true/false, yes/no, NLI), log-likelihood"),
    ("majority_baseline", "  majority-class baseline"),
    ("rouge1", "ROUGE-1 F1"),
    ("rouge2", "ROUGE-2 F1"),
    ("rougeL", "ROUGE-L F1"),
    ("bleu", "BLEU (sacrebleu, corpus)"),
    ("semantic_similarity", "Semantic similarity (MiniLM cosine)"),
    ("bertscore_f1", "BERTScore F1 (MiniLM)"),
    ("answer_words", "Answer length (words)"),
    ("reference_words", "Reference length (words)"),
    ("length_ratio", "Answer / reference length"),
    ("grounded_rate", "Grounded answers (support >= threshold; label-only answers not counted)"),
    ("label_only_rate", "Label-only answers (\"True.\", \"No.\": nothing to ground)"),
    ("support", "Mean support in context"),
    ("invented_reference_rate", "Answers with an invented reference"),
    ("hit_max_new_tokens_rate", "Answers cut at max_new_tokens"),
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
    value = metrics["metrics"][label][group].get(key)
    span = metrics["intervals"][label][group].get(key)
    if value is None:
        return "–"
    return f"{format_number(value)} [{format_number(span[0])}, {format_number(span[1])}]" if span else format_number(value)


def _change(metrics: dict, group: str, key: str) -> str:
    change = metrics["changes"].get("base→fine_tuned", {}).get(group, {}).get(key)
    if not change:
        return "–"
    mark = " **\\***" if change["significant"] else ""
    return f"{change['delta']:+.3f}{mark} (p={change['p_value']:.3f})"


def overall_table(metrics: dict, group: str = "overall") -> str:
    """Base, fine-tuned (each with its 95 % interval) and the change with its paired p-value."""
    rows = []
    for key, name in REPORT_ROWS:
        base, tuned = (metrics["metrics"][label][group].get(key) for label in MODELS)
        if base is None and tuned is None:
            continue
        change = "–" if key in ("majority_baseline", "reference_words") else _change(metrics, group, key)
        rows.append([name, _with_interval(metrics, "base", group, key), _with_interval(metrics, "fine_tuned", group, key), change])
    return markdown_table(["Metric", "Base [95 % CI]", "Fine-tuned [95 % CI]", "Change (paired p)"], rows, "lrrr")


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
                         _with_interval(metrics, label, group, "first_word_accuracy"),
                         format_number(values.get("majority_baseline")),
                         shares("loglikelihood_share_"), shares("first_word_share_")])
    return markdown_table(["Task", "Model", "Items", "Acc. log-lik. [CI]", "Acc. first word [CI]", "Majority",
                           "Predicted labels (log-lik.)", "Predicted labels (first word)"], rows, "llrrrrll")


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
        f"`{identity['name']}` ({identity['architecture']}, config {identity['config_sha256']}); adapter `{run['adapter']}`",
        f"- Inference: {run['dtype']} on {run['device_type']}, batch {run['batch_size']}, greedy, max_new_tokens "
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
             f"resamples, seed {boot['seed']}); changes: paired bootstrap, **\\*** = p < {boot['alpha']}.", "",
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
        f"*log-likelihood* = the candidate ({choices}) whose first token is most probable right after the prompt "
        "(the same token the reference answer starts with; references that do not are counted as "
        "`reference_not_candidate_token` in metrics.json). *Predicted labels*: the share of each label among the "
        "model's choices, so a model that always says \"True\" shows a share near 1.",
        "- **ROUGE** (rouge_score, stemmed F1), **BLEU** (sacrebleu corpus BLEU, 0-100), **semantic similarity** "
        "(cosine of all-MiniLM-L6-v2 embeddings) and **BERTScore** F1 (same encoder, no rescaling) compare each "
        "answer with its reference. An empty answer or reference scores 0 against a non-empty one and the maximum "
        "against an empty one; empty answers are counted.",
        f"- **Grounded**: at least {threshold:.0%} of the answer's content words (stemmed; numbers count, and a "
        "number absent from the context makes the answer ungrounded) occur in the *context* — never the question, "
        "so a false premise copied from the question is not grounded (`kaggle_qa.text.support`, the one definition "
        "the synthesis filter uses too). Answers that are only a label (\"True.\") claim nothing: they are not "
        "counted and are reported as *label-only*.",
        "- **Invented reference**: the answer cites a URL, a section number, a \"Reference:/Source:\" text or a "
        "quoted title after \"refer to/see/documentation on\" that does not occur in the context.",
        "- **Intervals** resample documentation chunks, not rows (rows of one chunk are not independent); "
        "**p** is the paired bootstrap p-value of the change (same chunk draws for both models).",
        "- **LLM judge** (only when an endpoint is configured): the judge model grades each answer 1-5 against the "
        "passage and the reference (prompt in `pipelines/evaluate/judge.py`).",
        "",
    ]
