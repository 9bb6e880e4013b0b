"""Nodes of the train and sweep pipelines: examples → masking check → QLoRA → curves, table."""

from __future__ import annotations

import copy
import functools
import json
import logging
import random
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kaggle_qa.answer_length import answer_token_stats  # noqa: E402
from kaggle_qa.modeling import load_tokenizer, model_identity  # noqa: E402
from kaggle_qa.prompting import (  # noqa: E402
    IGNORE_INDEX,
    PROMPT_TEMPLATE_VERSION,
    candidate_token_ids,
    tokenize_example,
)
from kaggle_qa.qa_schema import LABEL_CHOICES, group_key, infer_task_type  # noqa: E402

from .config import TrainConfig  # noqa: E402
from .launch import run_distributed  # noqa: E402
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


def split_training_data(qa_train: list[dict], params: dict) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Split the training set by chunk into train / validation / held-out test rows.

    Model selection (early stopping, the kept checkpoint) must never see a test row, so the
    validation rows come from chunks of the *training* set that are not trained on, in the
    training answer style. `split.test_share` > 0 also holds chunks out as a test set
    (`qa_heldout`, e.g. for `--env published`, which trains on part of the paper's v3 and
    tests on the rest). Rows of one chunk always land on the same side.
    """
    split = params["split"]
    groups = sorted({group_key(row) for row in qa_train})
    random.Random(split["seed"]).shuffle(groups)
    n_test = round(split.get("test_share", 0.0) * len(groups))
    n_validation = max(1, round(split["validation_share"] * len(groups)))
    if n_test + n_validation >= len(groups):
        raise ValueError(
            f"qa_v3 has {len(groups)} chunks: too few to hold out {n_test} test and {n_validation} "
            "validation chunks and still train; lower train.split.validation_share / test_share"
        )
    test_groups, validation_groups = set(groups[:n_test]), set(groups[n_test : n_test + n_validation])
    train_rows, validation_rows, heldout_rows = [], [], []
    for row in qa_train:
        key = group_key(row)
        (heldout_rows if key in test_groups else validation_rows if key in validation_groups else train_rows).append(row)
    validation_rows = sample_rows(validation_rows, split.get("validation_max_rows"), split["seed"])
    train_rows = sample_rows(train_rows, params.get("max_train_examples"), params["seed"])
    report = {
        "groups": len(groups),
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "heldout_rows": len(heldout_rows),
        "validation_groups": sorted(validation_groups),
        "heldout_groups": sorted(test_groups),
        "train_groups": sorted(set(groups) - validation_groups - test_groups),
    }
    logger.info(
        "Split qa_v3 by chunk (%d chunks): %d training rows, %d validation rows (%d chunks), %d held-out test rows (%d chunks)",
        len(groups), len(train_rows), len(validation_rows), len(validation_groups), len(heldout_rows), len(test_groups),
    )
    return train_rows, validation_rows, heldout_rows, report


def _row_problem(row: dict, example, tokenizer, require_context: bool) -> str | None:
    """Why a row must not be trained on (None when it is fine)."""
    if not row["output"].strip():
        return "empty-output"  # the model would learn to answer nothing but <eos>
    if not row["instruction"].strip():
        return "empty-question"
    if require_context and not row["input"].strip():
        return "empty-context"
    needle = row["output"].strip()[:80]
    if example.truncated and needle in row["input"]:
        kept = tokenizer.decode(example.input_ids[: example.prompt_length], skip_special_tokens=True)
        if needle not in kept:
            return "answer-outside-kept-context"
    return None


def _label_target(example, row: dict, candidates: dict[str, list[int]]) -> tuple[int, list[int]]:
    """(position of the label token in input_ids, candidate token ids) for labelled rows, else (-1, [])."""
    ids = candidates.get(infer_task_type(row))
    position = example.prompt_length
    if ids and position < len(example.input_ids) and example.input_ids[position] in ids:
        return position, ids
    return -1, []


def _tokenize_rows(
    tokenizer, rows: list[dict], max_length: int, source: str, dropped: Counter, require_context: bool = True
) -> list[dict]:
    """Tokenize rows as training does; rows unfit to train on are counted in `dropped` by reason, not kept."""
    candidates = {task: list(ids.values()) for task, ids in candidate_token_ids(tokenizer, LABEL_CHOICES).items()}
    examples = []
    for index, row in enumerate(rows):
        example = tokenize_example(tokenizer, row["input"], row["instruction"], row["output"], max_length)
        problem = _row_problem(row, example, tokenizer, require_context)
        if problem:
            dropped[f"{source}:{problem}"] += 1
            logger.warning("%s: row %d not trained on (%s): %r", source, index, problem, row["instruction"][:80])
            continue
        if all(label == IGNORE_INDEX for label in example.labels):
            raise LossMaskingError(f"{source}: row {index} has no answer token left to train on")
        label_position, label_candidates = _label_target(example, row, candidates)
        examples.append(
            {"input_ids": example.input_ids, "labels": example.labels, "prompt_length": example.prompt_length,
             "truncated": example.truncated, "task_type": infer_task_type(row), "row": index,
             "group": group_key(row),
             "label_position": label_position, "label_candidates": label_candidates}
        )
    truncated = sum(e["truncated"] for e in examples)
    if truncated:
        dropped[f"{source}:context-truncated (kept, answer inside)"] += truncated
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
    train_rows: list[dict], validation_rows: list[dict], base_model: str, params: dict
) -> tuple[list[dict], list[dict], dict]:
    """Tokenize the training and validation rows, drop (and count) rows unfit to train on, check the loss masking."""
    tokenizer = _tokenizer(base_model)
    if not train_rows:
        raise ValueError("qa_v3 (training set) is empty: nothing to train on")
    if not validation_rows:
        raise ValueError("the validation split of qa_v3 is empty: cannot validate or early-stop")
    dropped: Counter = Counter()
    train_examples = _tokenize_rows(
        tokenizer, train_rows, params["max_length"], "train", dropped, params.get("require_context", True)
    )
    validation_examples = _tokenize_rows(
        tokenizer, validation_rows, params["max_length"], "validation", dropped, params.get("require_context", True)
    )
    check_loss_masking(tokenizer, train_rows, train_examples)
    data_report = {
        "train_examples": len(train_examples),
        "validation_examples": len(validation_examples),
        "train_tokens": sum(len(e["input_ids"]) for e in train_examples),
        "train_supervised_tokens": sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in train_examples),
        # answer + EOS tokens per training row: evaluate and the assistant size max_new_tokens from it
        "answer_tokens": answer_token_stats([sum(label != IGNORE_INDEX for label in e["labels"]) for e in train_examples]),
        "train_label_examples": sum(e["label_position"] >= 0 for e in train_examples),
        "validation_label_examples": sum(e["label_position"] >= 0 for e in validation_examples),
        "rows_not_trained_or_cut": dict(sorted(dropped.items())),
    }
    logger.info(
        "%d training examples (%d tokens, %d supervised, %d with a label decision), %d validation examples; %s",
        data_report["train_examples"], data_report["train_tokens"], data_report["train_supervised_tokens"],
        data_report["train_label_examples"], data_report["validation_examples"], data_report["rows_not_trained_or_cut"] or "no row dropped",
    )
    return train_examples, validation_examples, data_report


class TrainedAdapter:
    """A LoRA adapter ready to save: peft's files, training_params.json, base_model.json, data_split.json."""

    def __init__(self, model, training_params: dict, base_model_identity: dict, data_split: dict | None = None):
        self.model = model
        self.training_params = training_params
        self.base_model_identity = base_model_identity
        self.data_split = data_split or {}

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder)
        (folder / "training_params.json").write_text(json.dumps(self.training_params, indent=2, default=str))
        (folder / "base_model.json").write_text(json.dumps(self.base_model_identity, indent=2))
        (folder / "data_split.json").write_text(json.dumps(self.data_split, indent=2))


def train_adapter(
    train_examples: list[dict], validation_examples: list[dict], data_report: dict, split_report: dict,
    base_model: str, params: dict, user_examples: list[dict] | None = None, others_examples: list[dict] | None = None,
) -> tuple[TrainedAdapter, dict]:
    """Fine-tune the base model (QLoRA or LoRA, by `params`); return the best adapter and the run's metrics.

    `train.distributed.num_processes` > 1: the ranks run under torchrun in a child process
    (launch.run_distributed) and this returns what rank 0 wrote. `user_examples` (the selection part
    of the user's questions, contexts.user_selection_examples) are measured beside validation; they and
    `others_examples` (answers written by someone else, strength.others_selection_examples) choose the
    adapter strength after training. The chunks of `others_examples` go into the adapter's data_split.json,
    so evaluate never scores them."""
    validation_examples = list(validation_examples) + list(user_examples or []) + list(others_examples or [])
    split_report = {**split_report,
                    "others_selection_groups": sorted({e["group"] for e in others_examples or []})}
    if TrainConfig.from_dict(params).distributed.num_processes > 1:
        model, run_metrics, history, compute_dtype = run_distributed(train_examples, validation_examples, base_model,
                                                                     params)
        recipe = None
    else:
        recipe = LoRAFinetuneRecipe(base_model, params, train_examples, validation_examples)
        recipe.setup()
        result = recipe.train()
        model, run_metrics, history, compute_dtype = result.model, result.metrics, result.history, recipe.compute_dtype
    split_counts = {k: v for k, v in split_report.items() if not k.endswith("_groups")}
    metrics = {**run_metrics, "data": data_report, "split": split_counts, "history": history}
    recorded = {**params, "resolved_compute_dtype": compute_dtype, "answer_tokens": data_report.get("answer_tokens"),
                "prompt_template_version": PROMPT_TEMPLATE_VERSION,
                # lora.alpha above is what was trained; adapter_config.json holds alpha x the chosen strength
                "strength_chosen": (metrics.get("strength") or {}).get("chosen")}
    adapter = TrainedAdapter(model, recorded, model_identity(base_model), split_report)
    if recipe is not None:
        recipe.cleanup()
    logger.info(
        "Validation loss %.4f → %.4f, label accuracy %s → %s (best at step %d) in %.0f s, %.1f tokens/s; "
        "label accuracy on training rows %s (last weights: %s)",
        metrics["base_val_loss"], metrics["best_val_loss"], metrics.get("base_val_label_accuracy"),
        metrics.get("best_val_label_accuracy"), metrics["best_step"], metrics["duration_s"],
        metrics["tokens_per_s"], metrics.get("train_label_accuracy"), metrics.get("last_step_train_label_accuracy"),
    )
    return adapter, metrics


def plot_learning_curves(train_metrics: dict) -> plt.Figure:
    """Train and validation loss against optimizer step (the paper's Figure 1); beside it, when the
    adapter strength was chosen on answers written by someone else, their loss against the strength."""
    history = train_metrics["history"]
    strength = train_metrics.get("strength") or {}
    if strength.get("table"):
        figure, (axes, strength_axes) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
        table = strength["table"]
        strength_axes.plot([row["strength"] for row in table], [row["loss"] for row in table], marker="o",
                           label=f"answers by others ({strength['examples']})")
        strength_axes.axvline(strength["chosen"], color="green", linestyle="--", label="chosen strength")
        _finish_loss_axes(strength_axes, "adapter strength (0 = base, 1 = as trained)", "Adapter strength")
    else:
        figure, axes = plt.subplots(figsize=(7, 4.5))
    train_points = [(h["step"], h["train_loss"]) for h in history if h["train_loss"] is not None]
    if train_points:
        axes.plot(*zip(*train_points), marker="o", label="train loss (answer tokens)")
    axes.plot([h["step"] for h in history], [h["val_loss"] for h in history], marker="s", label="validation loss")
    user = [(h["step"], h["user_selection_loss"]) for h in history if h.get("user_selection_loss") is not None]
    if user:
        axes.plot(*zip(*user), marker="^", label="your questions, selection part (retrieved context)")
    axes.axhline(train_metrics["base_val_loss"], color="grey", linestyle=":", label="base model (validation)")
    axes.axvline(train_metrics["best_step"], color="green", linestyle="--", label="best (kept) adapter")
    _finish_loss_axes(axes, "optimizer step", "Learning curves")
    figure.tight_layout()
    return figure


def _finish_loss_axes(axes, xlabel: str, title: str) -> None:
    """Labels, legend and grid of a cross-entropy-loss panel."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel("cross-entropy loss")
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)


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
    qa_train: list[dict], base_model: str, train_params: dict, sweep_params: dict
) -> tuple[list[dict], list[dict]]:
    """The sweep's examples: the train split and `build_examples` with the sweep-wide overrides."""
    params = merge_params(train_params, sweep_params["common"])
    train_rows, validation_rows, _, _ = split_training_data(qa_train, params)
    train_examples, validation_examples, _ = build_examples(train_rows, validation_rows, base_model, params)
    return train_examples, validation_examples


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
