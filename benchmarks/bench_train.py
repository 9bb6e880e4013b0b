"""Speed benchmark: the seed notebook's TRL SFTTrainer baseline vs our train node, same machine, one run.

Both sides get the same base model (the catalog's `base_model`), the same 4-bit NF4 QLoRA
(double quantization, `prepare_model_for_kbit_training`), the same LoRA (all linear layers,
r/alpha/dropout below), the same training examples from `qa_v3` in the same
"Context / Question / Answer" text (the project template, which follows the notebook's),
the same batch size, accumulation, learning rate, schedule, clipping and weight decay, and
the same compute dtype (`compute_dtype: auto`: bf16 where the CPU has it natively, fp32 otherwise).

(a) baseline, as the notebook trains: TRL `SFTTrainer` on the full text, loss on the whole
    sequence (logits for every position over the 262k vocabulary), `group_by_length`,
    gradient checkpointing (the paper's setting).
(b) ours: `LoRAFinetuneRecipe` (the train node) with loss on answer tokens only, logits only
    at label positions, length-grouped batches, and the CPU default of no gradient checkpointing.

Throughput is measured over the same examples and epochs, so the ratio of examples/s is the
ratio of tokens/s. Both adapters are then scored with the same answer-token validation loss
on the same `qa_v2` subset. Run (about 10 minutes on a busy 2-core CPU):

    .venv/bin/python benchmarks/bench_train.py --examples 20 --validation 8
"""

from __future__ import annotations

import argparse
import json
import os
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
    """qa_v3, qa_v2, base_model and params:train through the project's catalog."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        catalog = session.load_context().catalog
        return (catalog.load("qa_v3"), catalog.load("qa_v2"), catalog.load("base_model"),
                catalog.load("params:train"))


def run_baseline(base_model: str, rows: list[dict], params: dict, dtype: str, output_dir: str):
    """TRL SFTTrainer over the full prompt+answer text; returns (peft model, seconds, tokens)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    from kaggle_qa.modeling import load_model, load_tokenizer
    from kaggle_qa.prompting import render_prompt, render_training_text

    tokenizer = load_tokenizer(base_model, padding_side="right")
    texts = [render_training_text(render_prompt(r["input"], r["instruction"]), r["output"], tokenizer.eos_token)
             for r in rows]
    model = load_model(base_model, dtype=dtype, quantization={**params["quantization"], "compute_dtype": dtype})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
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
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20, help="training examples (both sides)")
    parser.add_argument("--validation", type=int, default=8, help="qa_v2 validation examples")
    parser.add_argument("--base-model", help="a model folder instead of the catalog's base_model (smoke tests)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "data" / "08_reporting" / "bench_train.json"))
    args = parser.parse_args()

    from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, sample_rows
    from kaggle_qa.modeling import resolve_dtype
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    qa_v3, qa_v2, base_model, train_params = load_inputs()
    base_model = args.base_model or base_model
    workdir = Path(tempfile.mkdtemp(prefix="bench_train-"))
    params = merge_params(train_params, {
        "max_train_examples": args.examples, "validation_examples": args.validation, "epochs": 1, "max_steps": None,
        "gradient_accumulation_steps": 1,  # a few examples → still several optimizer steps after warmup
        "eval_every_steps": 10_000, "early_stopping_patience": 10_000, "checkpoint_every_steps": 10_000,
        "checkpoint_dir": str(workdir / "checkpoints"),
    })
    dtype = resolve_dtype(params["compute_dtype"])
    train, validation = build_examples(qa_v3, qa_v2, base_model, params)
    train_rows = sample_rows(qa_v3, args.examples, params["seed"])  # the very rows build_examples used
    try:
        baseline_model, baseline_s, baseline_tokens = run_baseline(base_model, train_rows, params, dtype,
                                                                   str(workdir / "trl"))
        baseline_val = validation_loss(baseline_model, validation, dtype)
        del baseline_model

        recipe = LoRAFinetuneRecipe(base_model, params, train, validation)
        recipe.setup()
        result = recipe.train()
        ours_s = result.metrics["duration_s"] - result.metrics["validation_s"]  # training only, like trainer.train()
        ours_val = validation_loss(result.model, validation, dtype)
        ours_tokens = sum(len(e["input_ids"]) for e in train)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "machine": {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                    "compute_dtype": dtype},
        "examples": args.examples, "validation_examples": args.validation,
        "lora": params["lora"], "batch_size": params["batch_size"],
        "gradient_accumulation_steps": params["gradient_accumulation_steps"],
        "baseline_trl": {"seconds": baseline_s, "tokens": baseline_tokens, "tokens_per_s": baseline_tokens / baseline_s,
                         "examples_per_s": args.examples / baseline_s, "val_loss": baseline_val},
        "ours": {"seconds": ours_s, "tokens": ours_tokens, "tokens_per_s": ours_tokens / ours_s,
                 "supervised_tokens_per_s": result.metrics["supervised_tokens_per_s"],
                 "examples_per_s": args.examples / ours_s, "val_loss": ours_val,
                 "base_val_loss": result.metrics["base_val_loss"]},
    }
    report["speedup_examples_per_s"] = report["ours"]["examples_per_s"] / report["baseline_trl"]["examples_per_s"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nspeed-up (same examples, examples/s = tokens/s ratio): {report['speedup_examples_per_s']:.2f}x; "
          f"validation loss baseline {baseline_val:.4f} vs ours {ours_val:.4f} "
          f"(base model {result.metrics['base_val_loss']:.4f})")


if __name__ == "__main__":
    main()
