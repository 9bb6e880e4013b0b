"""QLoRA (NF4 4-bit base, dequantized at every matmul) vs LoRA on the unquantized base, on this CPU.

Same train node (`LoRAFinetuneRecipe`), same examples of qa_v3, same LoRA and schedule; only
`quantization` differs. Sides alternate which runs first; the median of `--repeats` runs per
side is reported: training tokens/s (time inside training steps only) and the validation loss
and label accuracy reached, so speed is compared at equal quality.

    .venv/bin/python benchmarks/bench_base_precision.py --examples 48 --validation 16 --repeats 3

Writes data/08_reporting/bench_base_precision.json. The choice it informs is
`train.quantization` in conf/base/parameters_train.yml (CPU default) — NF4 QLoRA stays the
paper's recipe and the CUDA default (conf/gpu).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import load_inputs  # noqa: E402

NF4 = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--validation", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compute-dtype", default="auto", help="auto | float32 | bfloat16 (both sides)")
    parser.add_argument("--output", default=str(ROOT / "data/08_reporting/bench_base_precision.json"))
    args = parser.parse_args()

    from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, split_training_data
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    qa_v3, base_model, train_params = load_inputs()
    workdir = Path(tempfile.mkdtemp(prefix="bench_precision-"))
    params = merge_params(train_params, {
        "max_train_examples": args.examples, "split": {"validation_max_rows": args.validation}, "epochs": 1,
        "time_budget_s": None, "train_fit_examples": 0, "eval_every_steps": 10_000, "early_stopping_patience": 10_000,
        "checkpoint_every_steps": 10_000, "compute_dtype": args.compute_dtype,
    })
    train_rows, validation_rows, _, _ = split_training_data(qa_v3, params)
    train, validation, _ = build_examples(train_rows, validation_rows, base_model, params)
    tokens = sum(len(e["input_ids"]) for e in train)
    sides = {"qlora_nf4": NF4, "lora_unquantized": None}
    runs = {name: [] for name in sides}
    for index in range(args.repeats):
        names = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in names:
            recipe = LoRAFinetuneRecipe(base_model, dict(params, quantization=sides[name],
                                                         checkpoint_dir=str(workdir / f"{name}{index}")),
                                        train, validation)
            recipe.setup()
            metrics = recipe.train().metrics
            final = recipe.measure(validation)
            recipe.cleanup()
            runs[name].append({"tokens_per_s": tokens / metrics["training_s"], "training_s": metrics["training_s"],
                               "val_loss": final["loss"], "val_label_accuracy": final["label_accuracy"]})
            print(f"run {index + 1} {name}: {runs[name][-1]}", flush=True)
            del recipe
    summary = {name: {key: statistics.median([r[key] for r in rs if r[key] is not None] or [float("nan")])
                      for key in ("tokens_per_s", "val_loss", "val_label_accuracy")} for name, rs in runs.items()}
    report = {
        "command": " ".join(["benchmarks/bench_base_precision.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512_bf16", "amx_tile")}),
        "compute_dtype": args.compute_dtype, "examples": len(train), "validation": len(validation),
        "median": summary, "runs": runs,
        "speedup_unquantized_over_nf4": summary["lora_unquantized"]["tokens_per_s"] / summary["qlora_nf4"]["tokens_per_s"],
    }
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
