"""The base model's evaluation metrics and speed in bfloat16 vs float32 on this CPU.

The fine-tuned model is evaluated in float32 on CPU (``modeling.load_finetuned_model``), so the
base is too (``evaluate.nodes.eval_dtype``). This measures what that choice changes for the base:
the same rows of the cross-teacher set (the paper's published v3, a seeded sample), answered by
the project's :class:`Evaluator` with the real embedded Gemma 3 270M loaded once in each dtype,
scored by the project's metrics (answer loss, ROUGE-L, label accuracy), and timed (answer + loss +
choice; the two dtypes alternate, ``--repeats`` times).

    nice .venv/bin/python benchmarks/bench_eval_dtype.py --rows 36 --repeats 1

Writes benchmarks/results/bench_eval_dtype.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_eval_dtype.json"))
    args = parser.parse_args()

    from kaggle_qa.datasets.synthesis import PublishedQADataset
    from kaggle_qa.metrics.scoring import is_choice_item, score_answers
    from kaggle_qa.metrics.summary import chunk_key, summarize
    from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, load_tokenizer, resolve_model_path
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

    results, seconds = {}, {"bfloat16": [], "float32": []}
    models = {dtype: load_model(base_model, dtype=dtype, attn_implementation="sdpa") for dtype in seconds}
    for repeat in range(args.repeats):
        for dtype in (list(seconds) if repeat % 2 == 0 else list(reversed(seconds))):
            evaluator = Evaluator(models[dtype], tokenizer, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, max_length=512)
            answered, took = evaluator.run(evaluator.examples(rows), candidates, False, dtype)
            seconds[dtype].append(took)
            results[dtype] = answered
            print(f"{dtype}: {took:.1f} s for {len(rows)} rows", flush=True)
    records = {}
    for dtype, answered in results.items():
        scores = score_answers(rows, [r["answer"] for r in answered], choices=[r.get("choice") for r in answered],
                               label=dtype)
        records[dtype] = [{**r, **s} for r, s in zip(answered, scores)]
    summary = summarize(rows, records, choices=choices, bootstrap={"resamples": 1000, "seed": 0},
                        pairs=[("bfloat16", "float32")])
    keys = ("answer_loss", "rougeL", "loglikelihood_accuracy", "loglikelihood_balanced_accuracy",
            "first_word_accuracy", "hit_max_new_tokens_rate")
    report = {
        "command": " ".join(["benchmarks/bench_eval_dtype.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512_bf16", "amx_tile")}),
        "threads": torch.get_num_threads(), "rows": len(rows), "labelled_rows": len(candidates),
        "median_seconds": {dtype: statistics.median(values) for dtype, values in seconds.items()},
        "metrics": {dtype: {key: summary["metrics"][dtype]["overall"].get(key) for key in keys} for dtype in results},
        "changes_bf16_to_fp32": {key: summary["changes"]["bfloat16→float32"]["overall"].get(key) for key in keys},
        "same_answer_share": sum(a["answer"] == b["answer"] for a, b in zip(results["bfloat16"], results["float32"])) / len(rows),
        "same_choice_share": (sum(results["bfloat16"][i]["choice"] == results["float32"][i]["choice"] for i in candidates)
                              / len(candidates)) if candidates else None,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
