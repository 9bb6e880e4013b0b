"""Nodes of the train and sweep pipelines: examples → masking check → QLoRA → curves, table."""

from __future__ import annotations

import copy
import functools
import json
import logging
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kaggle_qa.modeling import load_tokenizer, model_identity  # noqa: E402
from kaggle_qa.prompting import IGNORE_INDEX, tokenize_example  # noqa: E402
from kaggle_qa.qa_schema import infer_task_type  # noqa: E402

from .recipe import LoRAFinetuneRecipe  # noqa: E402

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _tokenizer(base_model: str):
    """The base model's tokenizer, loaded once per process (the 262k-token vocabulary is slow to parse)."""
    return load_tokenizer(base_model)


class LossMaskingError(ValueError):
    """Loss-carrying tokens do not match the answer + EOS of an example."""


def sample_rows(rows: list[dict], count: int | None, seed: int) -> list[dict]:
    """A fixed (seeded) subset of `count` rows in their original order; all rows when count is null."""
    if not count or count >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), count))
    return [rows[i] for i in keep]


def _tokenize_rows(tokenizer, rows: list[dict], max_length: int, source: str) -> list[dict]:
    examples = []
    for index, row in enumerate(rows):
        example = tokenize_example(tokenizer, row["input"], row["instruction"], row["output"], max_length)
        if all(label == IGNORE_INDEX for label in example.labels):
            raise LossMaskingError(f"{source}: row {index} has no answer token left to train on")
        examples.append(
            {"input_ids": example.input_ids, "labels": example.labels, "prompt_length": example.prompt_length,
             "truncated": example.truncated, "task_type": infer_task_type(row), "row": index}
        )
    truncated = sum(e["truncated"] for e in examples)
    if truncated:
        logger.warning("%s: %d of %d examples truncated to %d tokens", source, truncated, len(examples), max_length)
    return examples


def check_loss_masking(tokenizer, rows: list[dict], examples: list[dict]) -> dict[str, dict]:
    """Decode the loss-carrying tokens of one example per task type; raise if they are not answer + EOS."""
    report = {}
    for example in examples:
        task_type = example["task_type"]
        if task_type in report:
            continue
        row = rows[example["row"]]
        labels, input_ids = example["labels"], example["input_ids"]
        where = f"row {example['row']} ({task_type})"
        trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        if not trained:
            raise LossMaskingError(f"{where}: no token carries loss")
        if trained[0] != example["prompt_length"] or trained != list(range(trained[0], len(labels))):
            raise LossMaskingError(
                f"{where}: loss must cover exactly the tokens after the prompt; prompt tokens "
                f"{[i for i in trained if i < example['prompt_length']][:5]} carry loss or answer tokens are skipped"
            )
        if any(labels[i] != input_ids[i] for i in trained):
            raise LossMaskingError(f"{where}: labels differ from the input ids they should predict")
        if labels[-1] != tokenizer.eos_token_id:
            raise LossMaskingError(f"{where}: the EOS token {tokenizer.eos_token!r} is not trained")
        answer_text = tokenizer.decode([labels[i] for i in trained[:-1]])
        expected = row["output"].strip()
        if not example["truncated"] and answer_text.strip() != expected:
            raise LossMaskingError(f"{where}: trained tokens decode to {answer_text!r}, expected {expected!r}")
        prompt_text = tokenizer.decode(input_ids[: example["prompt_length"]], skip_special_tokens=True)
        report[task_type] = {"row": example["row"], "trained_text": tokenizer.decode([labels[i] for i in trained]),
                             "prompt_tail": prompt_text[-40:]}
        logger.info("Loss masking OK for %s: trains on %r after prompt …%r",
                    where, report[task_type]["trained_text"], report[task_type]["prompt_tail"])
    return report


def build_examples(
    qa_train: list[dict], qa_validation: list[dict], base_model: str, params: dict
) -> tuple[list[dict], list[dict]]:
    """Tokenize the training set and a fixed validation subset; check the loss masking first."""
    tokenizer = _tokenizer(base_model)
    train_rows = sample_rows(qa_train, params["max_train_examples"], params["seed"])
    validation_rows = sample_rows(qa_validation, params["validation_examples"], params["validation_seed"])
    if not train_rows:
        raise ValueError("qa_v3 (training set) is empty: nothing to train on")
    if not validation_rows:
        raise ValueError("qa_v2 (validation set) is empty: cannot validate or early-stop")
    train_examples = _tokenize_rows(tokenizer, train_rows, params["max_length"], "qa_v3")
    validation_examples = _tokenize_rows(tokenizer, validation_rows, params["max_length"], "qa_v2")
    check_loss_masking(tokenizer, train_rows, train_examples)
    logger.info(
        "%d training examples (%d tokens, %d supervised), %d validation examples",
        len(train_examples), sum(len(e["input_ids"]) for e in train_examples),
        sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in train_examples), len(validation_examples),
    )
    return train_examples, validation_examples


class TrainedAdapter:
    """A LoRA adapter ready to save: peft's files plus training_params.json and base_model.json."""

    def __init__(self, model, training_params: dict, base_model_identity: dict):
        self.model = model
        self.training_params = training_params
        self.base_model_identity = base_model_identity

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder)
        (folder / "training_params.json").write_text(json.dumps(self.training_params, indent=2, default=str))
        (folder / "base_model.json").write_text(json.dumps(self.base_model_identity, indent=2))


def train_adapter(
    train_examples: list[dict], validation_examples: list[dict], base_model: str, params: dict
) -> tuple[TrainedAdapter, dict]:
    """QLoRA-fine-tune the base model; return the best adapter and the run's metrics."""
    recipe = LoRAFinetuneRecipe(base_model, params, train_examples, validation_examples)
    recipe.setup()
    result = recipe.train()
    metrics = {**result.metrics, "history": result.history}
    adapter = TrainedAdapter(result.model, params, model_identity(base_model))
    recipe.cleanup()
    logger.info(
        "Validation loss %.4f → %.4f (best at step %d) in %.0f s, %.1f tokens/s",
        metrics["base_val_loss"], metrics["best_val_loss"], metrics["best_step"],
        metrics["duration_s"], metrics["tokens_per_s"],
    )
    return adapter, metrics


def plot_learning_curves(train_metrics: dict) -> plt.Figure:
    """Train and validation loss against optimizer step (the paper's Figure 1)."""
    history = train_metrics["history"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    train_points = [(h["step"], h["train_loss"]) for h in history if h["train_loss"] is not None]
    if train_points:
        axes.plot(*zip(*train_points), marker="o", label="train loss (answer tokens)")
    axes.plot([h["step"] for h in history], [h["val_loss"] for h in history], marker="s", label="validation loss")
    axes.axhline(train_metrics["base_val_loss"], color="grey", linestyle=":", label="base model (validation)")
    axes.axvline(train_metrics["best_step"], color="green", linestyle="--", label="best (kept) adapter")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy loss")
    axes.set_title("Learning curves")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def merge_params(base: dict, *overrides: dict) -> dict:
    """Deep-merge parameter overrides onto a base dict (nested dicts merged key by key)."""
    merged = copy.deepcopy(base)
    for override in overrides:
        for key, value in (override or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_params(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def build_sweep_examples(
    qa_train: list[dict], qa_validation: list[dict], base_model: str, train_params: dict, sweep_params: dict
) -> tuple[list[dict], list[dict]]:
    """The sweep's examples: `build_examples` with the sweep-wide overrides (e.g. fewer examples)."""
    return build_examples(qa_train, qa_validation, base_model, merge_params(train_params, sweep_params["common"]))


def run_sweep_experiment(
    train_examples: list[dict], validation_examples: list[dict], base_model: str,
    train_params: dict, sweep_params: dict, experiment: dict, name: str,
) -> dict:
    """Train one Table 3 experiment (train params + sweep-wide + experiment overrides); return its row."""
    params = merge_params(train_params, sweep_params["common"], experiment)
    params["checkpoint_dir"] = str(Path(params["checkpoint_dir"]) / f"sweep_{name}")
    recipe = LoRAFinetuneRecipe(base_model, params, train_examples, validation_examples)
    recipe.setup()
    metrics = recipe.train().metrics
    recipe.cleanup()
    lora = params["lora"]
    return {
        "experiment": name, "lora_rank": lora["r"], "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"], "batch_size": params["batch_size"],
        "gradient_accumulation_steps": params["gradient_accumulation_steps"],
        "learning_rate": params["learning_rate"], "weight_decay": params["weight_decay"],
        "epochs": params["epochs"], "steps": metrics["steps"],
        "duration_min": round(metrics["duration_s"] / 60, 2),
        "train_loss": round(metrics["train_loss"], 4), "test_loss": round(metrics["best_val_loss"], 4),
        "base_test_loss": round(metrics["base_val_loss"], 4),
    }


def build_sweep_table(*rows: dict) -> pd.DataFrame:
    """Table 3: one row per experiment, in the order given."""
    return pd.DataFrame(list(rows))
