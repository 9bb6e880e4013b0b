"""What makes the label decision learnable? Train variants of the recipe on a chunk-disjoint
split of a QA file and score each on held-out chunks (log-likelihood label choice, as evaluate
does), with the model exactly as trained.

    .venv/bin/python benchmarks/recipe_probe.py --data data/03_primary/published/kaggle_docs_QA_v3.json \
        --variant 'qlora_r16:{"quantization": {"load_in_4bit": true, "quant_type": "nf4", "double_quant": true}}' \
        --variant 'lora_r16:{}' --budget 300

Each variant's overrides (JSON) are merged onto conf/base/parameters_train.yml. Results are
appended to data/08_reporting/recipe_probe.jsonl (one line per variant, with the command).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kaggle_qa.modeling import EMBEDDED_GEMMA, resolve_model_path  # noqa: E402
from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, split_training_data  # noqa: E402
from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe  # noqa: E402
from kaggle_qa.qa_schema import infer_task_type  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json"))
    parser.add_argument("--test-share", type=float, default=0.3)
    parser.add_argument("--variant", action="append", required=True, help="name:{json overrides}")
    parser.add_argument("--budget", type=float, default=None, help="time_budget_s for every variant")
    parser.add_argument("--out", default=str(ROOT / "data/08_reporting/recipe_probe.jsonl"))
    parser.add_argument(
        "--score-data", default=None,
        help="a second QA file (e.g. the paper's published v3: questions another teacher wrote) whose "
        "true/false and yes/no rows are scored too (score_label_accuracy)")
    parser.add_argument("--score-limit", type=int, default=240, help="a seeded sample of this many labelled rows")
    parser.add_argument("--score-base", action="store_true", help="also score the base model (before training)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    base = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text())["train"]
    base_model = resolve_model_path(EMBEDDED_GEMMA, ROOT / "data/06_models/base_model")
    rows = json.loads(Path(args.data).read_text())
    score_rows, base_scored = [], False
    if args.score_data:
        labelled = [r for r in json.loads(Path(args.score_data).read_text())
                    if infer_task_type(r) in ("true_false", "yes_no") and r.get("input")]
        score_rows = random.Random(0).sample(labelled, min(args.score_limit, len(labelled)))
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        params = merge_params(base, {"split": {"test_share": args.test_share}}, json.loads(overrides or "{}"))
        if args.budget is not None:
            params["time_budget_s"] = args.budget
        params["checkpoint_dir"] = str(ROOT / "data/06_models/probe_checkpoints" / name)
        train_rows, validation_rows, test_rows, _ = split_training_data(rows, params)
        train, validation, _ = build_examples(train_rows, validation_rows, base_model, params)
        test = build_examples(test_rows, validation_rows[:1], base_model, params)[0] if test_rows else []
        score = build_examples(score_rows, validation_rows[:1], base_model, params)[0] if score_rows else []
        started = time.perf_counter()
        recipe = LoRAFinetuneRecipe(base_model, params, train, validation)
        recipe.setup()
        scored = {}
        if score and args.score_base and not base_scored:
            before = recipe.measure(score)  # LoRA B starts at zero: this is the base model
            scored |= {"base_score_label_accuracy": before["label_accuracy"],
                       "base_score_top_label_share": before["top_label_share"]}
            base_scored = True
        result = recipe.train()
        recipe.cleanup()
        held_out = recipe.measure(test) if test else {}
        if score:
            other = recipe.measure(score)
            scored |= {"score_data": args.score_data, "score_label_accuracy": other["label_accuracy"],
                       "score_label_balanced_accuracy": other.get("label_balanced_accuracy"),
                       "score_top_label_share": other["top_label_share"], "score_label_examples": other["label_examples"]}
        record = {
            "variant": name, "overrides": overrides, "data": args.data, "command": " ".join(sys.argv),
            "cpu_bf16": recipe.compute_dtype, "seconds": round(time.perf_counter() - started, 1),
            "test_label_accuracy": held_out.get("label_accuracy"), "test_top_label_share": held_out.get("top_label_share"),
            "test_label_examples": held_out.get("label_examples"), "test_loss": held_out.get("loss"), **scored,
            **{k: result.metrics[k] for k in (
                "steps", "total_steps_planned", "examples_seen", "tokens_per_s", "best_step", "best_val_loss",
                "best_val_label_accuracy", "base_val_label_accuracy", "train_label_accuracy", "training_s", "validation_s")},
        }
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        del recipe, result
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
