"""One LoRA training step (forward + backward, 4 x 170 tokens, answer loss on 30 tokens per row) of
the real Gemma 3 270M with bf16 weights under bf16 autocast vs fp32 weights (with and without
bf16 autocast). It decided that the unquantized CPU path keeps fp32 weights and autocasts.

    .venv/bin/python benchmarks/bench_weight_dtype.py --threads 1 --repeats 3

Measured on a 2-core Intel Xeon with AMX (one thread, another job on the other core), seconds per
step, three repeats: bf16 weights + autocast 8.4 / 7.9 / 7.1; fp32 weights 14.3 / 14.6 / 6.8;
fp32 weights + autocast 3.4 / 3.1 / 3.0 (2.4x faster than bf16 weights). On an AVX2-only CPU
`compute_dtype: auto` resolves to float32 (no autocast), where the question does not arise.
Results go to data/08_reporting/bench_weight_dtype.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, resolve_model_path
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum

    path = resolve_model_path(EMBEDDED_GEMMA, ROOT / "data/06_models/base_model")
    ids = torch.randint(10, 20000, (4, 170), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :140] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    results = {}
    for name, dtype, autocast in [("bf16 weights + autocast", "bfloat16", True), ("fp32 weights", "float32", False),
                                  ("fp32 weights + autocast", "float32", True)]:
        model = get_peft_model(load_model(path, dtype=dtype),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        model.train()
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss, count = answer_loss_sum(model.get_base_model(), batch, 1024)
            (loss / count).backward()
            times.append(time.perf_counter() - started)
        results[name] = {"seconds": times, "median": statistics.median(times)}
        print(name, [round(t, 2) for t in times], flush=True)
        del model
    (ROOT / "data/08_reporting").mkdir(parents=True, exist_ok=True)
    (ROOT / "data/08_reporting/bench_weight_dtype.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
