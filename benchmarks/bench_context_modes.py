"""What the retrieved and closed-book context modes cost next to the gold mode, per question.

The three-mode comparison covers the whole test set; its gold mode reuses the main evaluation's
answers, so the extra cost of a default run is the retrieved + none passes. This times the
evaluation's own batched inference (``Evaluator.run``) of one model on the same questions in each
mode and prints seconds, items/s, mean prompt tokens and the ratio to gold::

    .venv/bin/python benchmarks/bench_context_modes.py --rows 24 --max-new-tokens 64

Rows: a seeded sample of the paper's published v3 (questions + their gold contexts); retrieved
contexts from an index built over ``data/02_intermediate/doc_chunks.json`` with the project's
retrieval parameters. Base model: ``data/06_models/base_model`` (float32 on CPU, as evaluate).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from kaggle_qa.modeling import load_model, load_tokenizer
    from kaggle_qa.pipelines.evaluate.inference import Evaluator
    from kaggle_qa.pipelines.evaluate.modes import retrieved_contexts
    from kaggle_qa.retrieval import Retriever, build_index

    rows = json.loads((ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json").read_text())
    rows = random.Random(args.seed).sample(rows, args.rows)
    retrieval = yaml.safe_load((ROOT / "conf/base/parameters_ingestion.yml").read_text())["retrieval"]
    chunk_file = ROOT / "data/02_intermediate/doc_chunks.json"  # versioned: <file>/<version>/<file>
    chunk_file = sorted(chunk_file.glob("*/doc_chunks.json"))[-1] if chunk_file.is_dir() else chunk_file
    chunks = json.loads(chunk_file.read_text())
    retriever = Retriever(build_index(chunks), rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    retrieved, _ = retrieved_contexts(rows, retriever, retrieval)
    contexts = {"gold": [row["input"] for row in rows], "retrieved": retrieved, "none": [""] * len(rows)}
    base = str(ROOT / "data/06_models/base_model")
    model, tokenizer = load_model(base, dtype="float32").eval(), load_tokenizer(base)
    evaluator = Evaluator(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          max_length=512)
    timings = {}
    for mode, context in contexts.items():
        examples = evaluator.examples([{**row, "input": c} for row, c in zip(rows, context)])
        started = time.perf_counter()
        results, _ = evaluator.run(examples, {}, whole_sequence=False, label=mode)
        seconds = time.perf_counter() - started
        timings[mode] = {"seconds": round(seconds, 1), "items_per_s": round(len(rows) / seconds, 3),
                         "mean_prompt_tokens": round(sum(e.prompt_length for e in examples) / len(examples), 1),
                         "mean_new_tokens": round(sum(r["new_tokens"] for r in results) / len(results), 1)}
    for mode, timing in timings.items():
        timing["ratio_to_gold"] = round(timing["seconds"] / timings["gold"]["seconds"], 2)
    print(json.dumps({"rows": args.rows, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                      "modes": timings}, indent=2))


if __name__ == "__main__":
    main()
