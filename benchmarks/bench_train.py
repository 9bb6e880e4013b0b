"""Speed benchmark: the seed notebook's TRL SFTTrainer baseline vs our train node, same machine.

Both sides get the same base model (the catalog's `base_model`), the same base precision
(the train config's `quantization`: NF4 QLoRA or LoRA on the unquantized base; `--quantization`
overrides both), the same LoRA (all linear layers), the same training examples from `qa_v3`
in the same "Context / Question / Answer" text, the same batch size, accumulation, learning
rate, schedule, clipping and weight decay, the same compute dtype (`compute_dtype: auto`) and
the same gradient-checkpointing setting (`--gradient-checkpointing on|off` to see its effect).

(a) baseline, as the notebook trains: TRL `SFTTrainer` on the full text, loss on the whole
    sequence (logits for every position over the 262k vocabulary), `group_by_length`.
(b) ours: `LoRAFinetuneRecipe` (the train node): loss on answer tokens only, logits only at
    label positions, length-grouped batches padded to their own longest example.

Timing: each side's time inside its training loop only (TRL: `trainer.train()`; ours: the
recipe's `training_s`, which excludes every validation pass). Sides alternate which runs first;
the median of `--repeats` runs per side is reported, with both sides' validation loss (the
same answer-token loss on the same validation rows of qa_v3's held-out chunks) and the ratio.

    .venv/bin/python benchmarks/bench_train.py --examples 16 --validation 8 --repeats 3
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


def run_baseline(base_model: str, rows: list[dict], params: dict, dtype: str, output_dir: str):
    """TRL SFTTrainer over the full prompt+answer text; returns (peft model, seconds, tokens)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    from kaggle_qa.modeling import keep_4bit_weights_trainable, load_model, load_tokenizer
    from kaggle_qa.prompting import render_prompt, render_training_text

    tokenizer = load_tokenizer(base_model, padding_side="right")
    texts = [render_training_text(render_prompt(r["input"], r["instruction"]), r["output"], tokenizer.eos_token)
             for r in rows]
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
        output_dir=output_dir, dataset_text_field="text", max_length=params["max_length"], packing=False,
        per_device_train_batch_size=params["batch_size"],
        gradient_accumulation_steps=params["gradient_accumulation_steps"], num_train_epochs=params["epochs"],
        learning_rate=params["learning_rate"], lr_scheduler_type=params["lr_scheduler"],
        warmup_steps=params["warmup_ratio"], max_grad_norm=params["max_grad_norm"],
        weight_decay=params["weight_decay"], train_sampling_strategy="group_by_length",
        optim="adamw_torch", bf16=dtype == "bfloat16", fp16=False, use_cpu=not torch.cuda.is_available(),
        logging_steps=1, save_strategy="no", report_to="none", seed=params["seed"],
        gradient_checkpointing=params["gradient_checkpointing"], gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * params["epochs"]
    started = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - started, tokens


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
    parser.add_argument("--examples", type=int, default=20, help="training examples (both sides)")
    parser.add_argument("--validation", type=int, default=8, help="validation rows (qa_v3's validation chunks)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating which goes first")
    parser.add_argument("--quantization", choices=["config", "nf4", "none"], default="config",
                        help="both sides: the train config's choice, NF4 QLoRA, or LoRA on the unquantized base")
    parser.add_argument("--gradient-checkpointing", choices=["config", "on", "off"], default="config",
                        help="both sides get the same setting")
    parser.add_argument("--base-model", help="a model folder instead of the catalog's base_model (smoke tests)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "data" / "08_reporting" / "bench_train.json"))
    args = parser.parse_args()

    from kaggle_qa.modeling import resolve_dtype
    from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, split_training_data
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    qa_v3, base_model, train_params = load_inputs()
    base_model = args.base_model or base_model
    workdir = Path(tempfile.mkdtemp(prefix="bench_train-"))
    overrides = {
        "max_train_examples": args.examples, "split": {"validation_max_rows": args.validation}, "epochs": 1,
        "max_steps": None, "time_budget_s": None, "train_fit_examples": 0,
        "gradient_accumulation_steps": 1,  # a few examples → still several optimizer steps after warmup
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
    tokens = sum(len(e["input_ids"]) for e in train)

    def baseline_run(index: int) -> dict:
        model, seconds, baseline_tokens = run_baseline(base_model, train_rows, params, dtype, str(workdir / f"trl{index}"))
        result = {"seconds": seconds, "tokens": baseline_tokens, "tokens_per_s": baseline_tokens / seconds,
                  "val_loss": validation_loss(model, validation, dtype)}
        del model
        return result

    def ours_run(index: int) -> dict:
        recipe = LoRAFinetuneRecipe(base_model, dict(params, checkpoint_dir=str(workdir / f"ck{index}")), train, validation)
        recipe.setup()
        metrics = recipe.train().metrics  # training_s: time inside training steps only (no validation)
        result = {"seconds": metrics["training_s"], "tokens": tokens, "tokens_per_s": tokens / metrics["training_s"],
                  "val_loss": validation_loss(recipe.model, validation, dtype), "base_val_loss": metrics["base_val_loss"]}
        del recipe
        return result

    runs = {"baseline_trl": [], "ours": []}
    try:
        for index in range(args.repeats):  # alternate which side runs first (warm caches, thermal state)
            order = [("baseline_trl", baseline_run), ("ours", ours_run)]
            for name, run in order if index % 2 == 0 else reversed(order):
                runs[name].append(run(index))
                print(f"run {index + 1}/{args.repeats} {name}: {runs[name][-1]['tokens_per_s']:.1f} tokens/s, "
                      f"validation loss {runs[name][-1]['val_loss']:.4f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    sides = {name: {"median_tokens_per_s": median([r["tokens_per_s"] for r in rs]),
                    "median_seconds": median([r["seconds"] for r in rs]),
                    "median_val_loss": median([r["val_loss"] for r in rs]), "runs": rs}
             for name, rs in runs.items()}
    report = {
        "machine": {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "compute_dtype": dtype, "cpu": platform.processor() or platform.machine()},
        "command": " ".join(["benchmarks/bench_train.py", *sys.argv[1:]]),
        "examples": len(train), "validation_examples": len(validation), "repeats": args.repeats,
        "quantization": params.get("quantization"), "gradient_checkpointing": params["gradient_checkpointing"],
        "lora": params["lora"], "batch_size": params["batch_size"],
        "gradient_accumulation_steps": params["gradient_accumulation_steps"],
        **sides,
        "ratio_tokens_per_s": sides["ours"]["median_tokens_per_s"] / sides["baseline_trl"]["median_tokens_per_s"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("baseline_trl", "ours")}, indent=2))
    for name in ("baseline_trl", "ours"):
        side = sides[name]
        print(f"{name:13s} median {side['median_tokens_per_s']:.1f} tokens/s over {args.repeats} runs, "
              f"validation loss {side['median_val_loss']:.4f}")
    print(f"ratio (ours / baseline, median tokens/s): {report['ratio_tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
