"""Reporting: the validation log line, the learning-curve history entry and the run's metrics."""

from __future__ import annotations

import logging
import resource

import torch

from .config import TrainConfig

logger = logging.getLogger(__name__)


def history_entry(state: dict, result: dict, train_loss: float | None, lr: float) -> dict:
    return {"step": state["step"], "epoch": state["epoch"], "train_loss": train_loss, "val_loss": result["loss"],
            "val_label_accuracy": result["label_accuracy"], "val_top_label_share": result["top_label_share"],
            "val_label_balanced_accuracy": result.get("label_balanced_accuracy"),
            "val_paired_z": result.get("paired_z"), "score": result["score"], "lr": lr,
            "elapsed_s": round(state["elapsed_s"], 1),
            **({"user_selection_loss": result["user_selection_loss"]} if "user_selection_loss" in result else {})}


def log_validation(state: dict, result: dict, train_loss: float | None, improved: bool, patience: int) -> None:
    accuracy = "-" if result["label_accuracy"] is None else (
        f"{result['label_accuracy']:.3f} (balanced {result['label_balanced_accuracy']:.3f}, "
        f"top label {result['top_label_share']:.0%}"
        + ("" if result.get("paired_z") is None else f", paired z {result['paired_z']:+.2f} vs the best so far")
        + ")"
    )
    logger.info(
        "step %d/%d epoch %d: train loss %s, validation loss %.4f%s, label accuracy %s%s",
        state["step"], state["total_steps"], state["epoch"],
        "-" if train_loss is None else f"{train_loss:.4f}", result["loss"],
        f" (your questions' selection part: {result['user_selection_loss']:.4f})" if "user_selection_loss" in result else "",
        accuracy,
        " (best, kept)" if improved else f" (no improvement {state['evals_without_improvement']}/{patience})",
    )


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_metrics(config: TrainConfig, s: dict, *, planned_steps: int, train_examples: list[dict],
                validation_examples: list[dict], device: torch.device, compute_dtype: str, optimizer: str,
                world_size: int = 1) -> dict:
    """train_metrics.json's numbers (the history and data reports are added by the node)."""
    elapsed, training = max(s["elapsed_s"], 1e-9), max(s["train_s"], 1e-9)
    fit = s.get("train_fit", {})
    last_fit = s.get("train_fit_last", fit)
    n_val_labels = sum(1 for e in validation_examples if e.get("label_position", -1) > 0)
    selection = config.selection
    return {
        "base_val_loss": s["base_val_loss"],
        "base_val_label_accuracy": s.get("base_val_label_accuracy"),
        "base_val_top_label_share": s.get("base_val_top_label_share"),
        "best_val_loss": s["best_val_loss"],
        "best_val_label_accuracy": s.get("best_val_label_accuracy"),
        "best_val_top_label_share": s.get("best_val_top_label_share"),
        "best_val_label_balanced_accuracy": s.get("best_val_label_balanced_accuracy"),
        "best_score": s["best_score"],
        "best_step": s["best_step"],
        # the kept adapter scaled to the strength chosen on answers written by someone else (strength.py)
        "strength": s.get("strength"),
        "selection": "%slabel accuracy beyond chance (paired test on the same %d labelled rows, |z| > %.1f), "
                     "else answer loss, on the validation split" % (
            "balanced " if selection.balanced else "", n_val_labels, selection.noise_z)
        if selection.use_label_accuracy else "answer loss on the validation split",
        "train_loss": s.get("window_train_loss", s.get("last_train_loss")),
        "train_label_accuracy": fit.get("label_accuracy"),
        "train_top_label_share": fit.get("top_label_share"),
        "train_fit_loss": fit.get("loss"),
        "train_fit_examples": fit.get("examples"),
        # the same rows under the last weights (= the kept ones when the last step was kept)
        "last_step_train_label_accuracy": last_fit.get("label_accuracy"),
        "last_step_train_top_label_share": last_fit.get("top_label_share"),
        "last_step_train_fit_loss": last_fit.get("loss"),
        "steps": s["step"],
        "total_steps_planned": planned_steps,
        "time_budget_s": config.time_budget_s,
        "budget_estimate": s.get("budget_estimate"),
        "budget_cut": s["total_steps"] < planned_steps,
        "budget_cut_at_step": s.get("budget_cut_at_step"),
        "budget_replans": s.get("budget_replans", []),
        "examples_seen": s["examples_seen"],
        "tokens_seen": s["trained_tokens"],
        "supervised_tokens_seen": s["supervised_tokens"],
        "epochs_completed": s["examples_seen"] / max(len(train_examples), 1),
        "stopped_early": bool(s.get("stopped_early", False)),
        "duration_s": elapsed,
        "training_s": s["train_s"],
        "validation_s": s["eval_s"],
        "tokens_per_s": s["trained_tokens"] / training,  # time in training steps only
        "supervised_tokens_per_s": s["supervised_tokens"] / training,
        "train_examples": len(train_examples),
        "validation_examples": len(validation_examples),
        "device": device.type,
        "compute_dtype": compute_dtype,
        "quantized_base": bool(config.quantization),
        "label_token_weight": config.label_token_weight,
        "optimizer": optimizer,
        "num_processes": world_size,
        **peak_memory(device),
    }
