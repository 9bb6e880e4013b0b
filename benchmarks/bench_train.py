"""Speed benchmark: TRL's SFTTrainer vs our train recipe, same window, same loss, same steps.

Both sides get the same base model (the catalog's `base_model`), the same base precision (the
train config's `quantization`; `--quantization` overrides both), the same LoRA (all linear
layers), the same **tokenized** training examples of `qa_v3` (our `build_examples`: identical
token ids), the same **loss** (mean cross-entropy over the answer tokens + EOS, nothing else:
TRL gets each example's `completion_mask`, so its `completion_only_loss` masks exactly our
`labels`; our `label_token_weight` is set to 1), the same batch size, no gradient accumulation,
the same learning rate, schedule, clipping and weight decay, the same compute dtype and
gradient-checkpointing setting, and the same number of optimizer steps (`--steps`, >= 20).

What differs is what is being compared: how each side batches and computes a step
(TRL: `group_by_length`, padding to the batch's longest, logits at every position; ours:
length-grouped megabatches padded to a multiple of 32, logits only at label positions).

Timing window, the same on both sides: the optimizer steps only, each from the moment its
batch is in hand to the end of the optimizer step (forward, backward, clipping, optimizer and
scheduler step), summed over the steps. Not timed: model loading, dataset preparation, the
data loader's fetching, TRL's logging and callbacks after each step, our validation passes.
(TRL: a callback records `on_step_begin` → `on_step_end`; ours: the recipe's `training_s`.)
Sides alternate which runs first; the median of `--repeats` runs per side is reported, with
both sides' validation loss (the same answer-token loss on the same validation rows).

    nice .venv/bin/python benchmarks/bench_train.py --steps 20 --batch-size 2 --repeats 3

Writes benchmarks/results/bench_train.json (`--output` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_inputs():
    """qa_v3, base_model and params:train through the project's catalog."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        catalog = session.load_context().catalog
        return catalog.load("qa_v3"), catalog.load("base_model"), catalog.load("params:train")


def run_baseline(base_model: str, examples: list[dict], params: dict, dtype: str, output_dir: str):
    """TRL SFTTrainer on our tokenized examples, loss on their answer tokens only; returns
    (peft model, seconds inside the optimizer steps, steps, tokens)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from kaggle_qa.modeling import keep_4bit_weights_trainable, load_model, load_tokenizer
    from kaggle_qa.prompting import IGNORE_INDEX

    class StepTimer(TrainerCallback):
        """Sums the time from each optimizer step's start to its end (TRL's logging runs after)."""

        def __init__(self):
            self.seconds, self.steps, self.started = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.started
            self.steps += 1

    tokenizer = load_tokenizer(base_model, padding_side="right")
    dataset = Dataset.from_dict({
        "input_ids": [e["input_ids"] for e in examples],
        "completion_mask": [[int(label != IGNORE_INDEX) for label in e["labels"]] for e in examples],
    })
    quantization = params.get("quantization")
    model = load_model(base_model, dtype=dtype,
                       quantization={**quantization, "compute_dtype": dtype} if quantization else None)
    keep_4bit_weights_trainable(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params["gradient_checkpointing"])
    lora = params["lora"]
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                             bias=lora["bias"], target_modules=lora["target_modules"],
                                             task_type="CAUSAL_LM"))
    config = SFTConfig(
        output_dir=output_dir, max_length=params["max_length"], packing=False, completion_only_loss=True,
        per_device_train_batch_size=params["batch_size"], gradient_accumulation_steps=1,
        max_steps=params["max_steps"], learning_rate=params["learning_rate"], lr_scheduler_type=params["lr_scheduler"],
        warmup_steps=params["warmup_ratio"], max_grad_norm=params["max_grad_norm"],
        weight_decay=params["weight_decay"], train_sampling_strategy="group_by_length",
        optim="adamw_torch", bf16=dtype == "bfloat16", fp16=False, use_cpu=not torch.cuda.is_available(),
        logging_steps=1, save_strategy="no", report_to="none", seed=params["seed"],
        gradient_checkpointing=params["gradient_checkpointing"], gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[timer])
    trainer.train()
    steps = timer.steps
    tokens = sum(len(e["input_ids"]) for e in examples[: steps * params["batch_size"]])
    return model, timer.seconds, steps, tokens


def validation_loss(peft_model, examples: list[dict], dtype: str) -> float:
    """Answer-token loss, token-weighted, with the project's evaluator."""
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    peft_model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        for start in range(0, len(examples), 4):
            loss_sum, n = answer_loss_sum(peft_model.get_base_model(), collate(examples[start : start + 4], 0), 4096)
            total, count = total + loss_sum.item(), count + n
    return total / count


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run, both sides (>= 20)")
    parser.add_argument("--batch-size", type=int, default=2, help="examples per step, both sides (no accumulation)")
    parser.add_argument("--validation", type=int, default=8, help="validation rows (qa_v3's validation chunks)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating which goes first")
    parser.add_argument("--quantization", choices=["config", "nf4", "none"], default="config",
                        help="both sides: the train config's choice, NF4 QLoRA, or LoRA on the unquantized base")
    parser.add_argument("--gradient-checkpointing", choices=["config", "on", "off"], default="config",
                        help="both sides get the same setting")
    parser.add_argument("--base-model", help="a model folder instead of the catalog's base_model (smoke tests)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "benchmarks" / "results" / "bench_train.json"))
    args = parser.parse_args()
    if args.steps < 20 and not args.base_model:
        parser.error("--steps must be >= 20: fewer steps time mostly warm-up")

    from kaggle_qa.modeling import resolve_dtype
    from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, split_training_data
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    qa_v3, base_model, train_params = load_inputs()
    base_model = args.base_model or base_model
    workdir = Path(tempfile.mkdtemp(prefix="bench_train-"))
    overrides = {
        "max_train_examples": args.steps * args.batch_size, "split": {"validation_max_rows": args.validation},
        "epochs": 1, "max_steps": args.steps, "batch_size": args.batch_size, "gradient_accumulation_steps": 1,
        "time_budget_s": None, "train_fit_examples": 0, "label_token_weight": 1.0,  # the same plain answer loss as TRL
        "eval_every_steps": 10_000, "early_stopping_patience": 10_000, "checkpoint_every_steps": 10_000,
        "checkpoint_dir": str(workdir / "checkpoints"),
    }
    if args.quantization != "config":
        overrides["quantization"] = (
            {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True} if args.quantization == "nf4" else None
        )
    if args.gradient_checkpointing != "config":
        overrides["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    params = merge_params(train_params, overrides)
    dtype = resolve_dtype(params["compute_dtype"])
    train_rows, validation_rows, _, _ = split_training_data(qa_v3, params)
    train, validation, _ = build_examples(train_rows, validation_rows, base_model, params)
    if len(train) < args.steps * args.batch_size:
        raise SystemExit(f"only {len(train)} training examples for {args.steps} steps of {args.batch_size}")
    train = train[: args.steps * args.batch_size]

    def baseline_run(index: int) -> dict:
        model, seconds, steps, tokens = run_baseline(base_model, train, params, dtype, str(workdir / f"trl{index}"))
        result = {"seconds": seconds, "steps": steps, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "val_loss": validation_loss(model, validation, dtype)}
        del model
        return result

    def ours_run(index: int) -> dict:
        recipe = LoRAFinetuneRecipe(base_model, dict(params, checkpoint_dir=str(workdir / f"ck{index}")), train, validation)
        recipe.setup()
        metrics = recipe.train().metrics  # training_s: time inside the optimizer steps only
        steps = metrics.get("steps", args.steps)
        tokens = sum(len(e["input_ids"]) for e in train)
        result = {"seconds": metrics["training_s"], "steps": steps, "tokens": tokens,
                  "tokens_per_s": tokens / metrics["training_s"], "val_loss": validation_loss(recipe.model, validation, dtype)}
        del recipe
        return result

    runs = {"baseline_trl": [], "ours": []}
    try:
        for index in range(args.repeats):  # alternate which side runs first (warm caches, thermal state)
            order = [("baseline_trl", baseline_run), ("ours", ours_run)]
            for name, run in order if index % 2 == 0 else reversed(order):
                runs[name].append(run(index))
                print(f"run {index + 1}/{args.repeats} {name}: {runs[name][-1]['steps']} steps in "
                      f"{runs[name][-1]['seconds']:.1f} s ({runs[name][-1]['tokens_per_s']:.1f} tokens/s), "
                      f"validation loss {runs[name][-1]['val_loss']:.4f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    sides = {name: {"median_seconds": median([r["seconds"] for r in rs]),
                    "median_seconds_per_step": median([r["seconds"] / r["steps"] for r in rs]),
                    "median_tokens_per_s": median([r["tokens_per_s"] for r in rs]),
                    "median_val_loss": median([r["val_loss"] for r in rs]), "runs": rs}
             for name, rs in runs.items()}
    report = {
        "machine": {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "compute_dtype": dtype, "cpu": platform.processor() or platform.machine(),
                    "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                                         if f in ("avx2", "avx512_bf16", "amx_tile")}),
                    "load_average_at_end": os.getloadavg()},
        "command": " ".join(["benchmarks/bench_train.py", *sys.argv[1:]]),
        "window": "optimizer steps only (batch in hand → optimizer + scheduler step), summed; no setup, "
                  "data fetching, logging or validation",
        "loss": "mean cross-entropy over answer tokens + EOS (TRL completion_only_loss on our labels; "
                "ours with label_token_weight 1)",
        "steps": args.steps, "examples": len(train), "validation_examples": len(validation), "repeats": args.repeats,
        "quantization": params.get("quantization"), "gradient_checkpointing": params["gradient_checkpointing"],
        "lora": params["lora"], "batch_size": params["batch_size"], "gradient_accumulation_steps": 1,
        **sides,
        "ratio_seconds_per_step": sides["baseline_trl"]["median_seconds_per_step"] / sides["ours"]["median_seconds_per_step"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("baseline_trl", "ours")}, indent=2))
    for name in ("baseline_trl", "ours"):
        side = sides[name]
        print(f"{name:13s} median {side['median_seconds_per_step']:.2f} s/step ({side['median_tokens_per_s']:.1f} "
              f"tokens/s) over {args.repeats} runs, validation loss {side['median_val_loss']:.4f}")
    print(f"TRL s/step / ours s/step (median): {report['ratio_seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
