"""Evaluation over float32 weights: float32 matmuls against bf16 matmuls (autocast), speed and metrics.

Evaluate computes both models' matmuls in ``evaluate.dtype`` resolved (``auto``: bfloat16 where the
CPU has native bf16, as training computed), over float32 weights (``evaluate.nodes.eval_compute_dtype``).
This measures what that changes: the same rows of the cross-teacher set (the paper's published v3,
a seeded sample), answered by the project's :class:`Evaluator` (answer + loss + choice) with the real
embedded Gemma 3 270M (and, with ``--adapter``, the fine-tuned model as evaluate loads it), each
compute dtype timed on the same loaded model, the two alternating ``--repeats`` times (median).
Where the time goes: each run's seconds split by phase (per-item forwards of prompt + reference,
the reference loss's LM head, greedy decoding, the rest), from timers around the Evaluator's methods.

    nice .venv/bin/python benchmarks/bench_eval_compute_dtype.py --rows 48 --repeats 3 \\
        --adapter data/06_models/adapter/<version>/adapter

Writes benchmarks/results/bench_eval_compute_dtype.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=124)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adapter", default=None, help="an adapter folder: the fine-tuned model is measured too")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_eval_compute_dtype.json"))
    args = parser.parse_args()

    from kaggle_qa.datasets.synthesis import PublishedQADataset
    from kaggle_qa.metrics.scoring import is_choice_item, score_answers
    from kaggle_qa.metrics.summary import chunk_key, summarize
    from kaggle_qa.modeling import EMBEDDED_GEMMA, load_finetuned_model, load_model, load_tokenizer, resolve_model_path
    from kaggle_qa.pipelines.evaluate.inference import Evaluator, candidate_continuations
    from kaggle_qa.qa_schema import LABEL_CHOICES, infer_task_type

    base_model = resolve_model_path(EMBEDDED_GEMMA, ROOT / "data/06_models/base_model")
    published = PublishedQADataset(filepath=str(ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json")).load()
    rows = random.Random(0).sample(published, args.rows)
    rows = [{**row, "id": str(i), "task_type": infer_task_type(row), "chunk": chunk_key(row)} for i, row in enumerate(rows)]
    choices = {task: list(words) for task, words in LABEL_CHOICES.items()}
    tokenizer = load_tokenizer(base_model)
    table = candidate_continuations(tokenizer, choices)
    candidates = {i: table[row["task_type"]] for i, row in enumerate(rows) if is_choice_item(row, choices)}

    phases = {"per-item forwards (prompt + reference)": "_forward_item", "reference loss LM head": "_token_log_probs",
              "label choice continuations": "_continuation_log_likelihoods", "greedy decoding": "_greedy"}
    spent: dict[str, float] = {}
    for phase, name in phases.items():
        def timed(*a, _f=getattr(Evaluator, name), _phase=phase, **k):
            started = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_phase] = spent.get(_phase, 0.0) + time.perf_counter() - started
        setattr(Evaluator, name, timed)

    models = {"base": load_model(base_model, dtype="float32", attn_implementation="sdpa")}
    if args.adapter:
        models["fine_tuned"] = load_finetuned_model(base_model, args.adapter, dtype="float32", attn_implementation="sdpa")
    seconds = {label: {dtype: [] for dtype in DTYPES} for label in models}
    split: dict[str, dict[str, list[dict]]] = {label: {dtype: [] for dtype in DTYPES} for label in models}
    results: dict[str, dict[str, list[dict]]] = {label: {} for label in models}
    for repeat in range(args.repeats):
        for label, model in models.items():
            for dtype in (DTYPES if repeat % 2 == 0 else tuple(reversed(DTYPES))):
                evaluator = Evaluator(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                      max_length=512, compute_dtype=dtype)
                spent.clear()
                answered, took = evaluator.run(evaluator.examples(rows), candidates, False, f"{label} {dtype}")
                seconds[label][dtype].append(took)
                split[label][dtype].append({**spent, "rest (packing, batching, tokens)": took - sum(spent.values())})
                results[label][dtype] = answered
                print(f"{label} {dtype} compute: {took:.1f} s for {len(rows)} rows", flush=True)

    keys = ("answer_loss", "rougeL", "loglikelihood_accuracy", "first_word_accuracy", "hit_max_new_tokens_rate")
    report = {
        "command": " ".join(["benchmarks/bench_eval_compute_dtype.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512_bf16", "amx_tile")}),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": len(rows), "labelled_rows": len(candidates),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
        "weights": "float32 (both compute dtypes)", "models": {},
    }
    for label in models:
        records = {}
        for dtype, answered in results[label].items():
            scores = score_answers(rows, [r["answer"] for r in answered], choices=[r.get("choice") for r in answered],
                                   label=f"{label} {dtype}")
            records[dtype] = [{**r, **s} for r, s in zip(answered, scores)]
        summary = summarize(rows, records, choices=choices, bootstrap={"resamples": 1000, "seed": 0},
                            pairs=[("float32", "bfloat16")])
        fp32, bf16 = results[label]["float32"], results[label]["bfloat16"]
        median = {dtype: statistics.median(values) for dtype, values in seconds[label].items()}
        report["models"][label] = {
            "seconds": seconds[label],
            "median_seconds": median,
            "median_seconds_by_phase": {dtype: {phase: statistics.median(run[phase] for run in split[label][dtype])
                                                for phase in split[label][dtype][0]} for dtype in DTYPES},
            "speedup_bf16": median["float32"] / median["bfloat16"],
            "metrics": {dtype: {key: summary["metrics"][dtype]["overall"].get(key) for key in keys} for dtype in DTYPES},
            "changes_fp32_to_bf16": {key: summary["changes"]["float32→bfloat16"]["overall"].get(key) for key in keys},
            "same_answer_share": sum(a["answer"] == b["answer"] for a, b in zip(fp32, bf16)) / len(rows),
            "same_choice_share": (sum(fp32[i]["choice"] == bf16[i]["choice"] for i in candidates) / len(candidates))
            if candidates else None,
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({label: {k: v for k, v in r.items() if k != "seconds"} for label, r in report["models"].items()},
                     indent=2, default=str))


if __name__ == "__main__":
    main()
