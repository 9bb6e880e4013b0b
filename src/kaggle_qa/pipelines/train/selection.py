"""Which validation pass's weights are kept: label accuracy beyond chance by a paired test on the
same validation items, else the answer loss; early-stopping patience."""

from __future__ import annotations

import math
from collections import Counter

from .config import SelectionConfig


def label_weights(golds: list[int], balanced: bool = True) -> list[float]:
    """What each item weighs in the label accuracy: 1/n, or for balanced accuracy 1/(k·n_label)
    over k gold labels (so that every label's items weigh 1/k in all). The one definition of
    "balanced" that `label_summary` and `paired_accuracy_z` share."""
    counts = Counter(golds)
    return [1 / (len(counts) * counts[gold]) if balanced else 1 / len(golds) for gold in golds]


def paired_accuracy_z(candidate: list[tuple[int, int]], reference: list[tuple[int, int]], balanced: bool = True) -> float:
    """z statistic of the accuracy difference candidate − reference, measured on the same items.

    Each item weighs what it weighs in the accuracy (`label_weights`); under the null hypothesis
    that the two passes are exchangeable, an item both got right or both got wrong adds nothing,
    and an item they disagree on adds ± its weight with equal chance. So
    z = Σ w·(right_c − right_r) / sqrt(Σ over disagreeing items of w²): McNemar's test
    (gained − lost) / sqrt(gained + lost) when the weights are equal. 0.0 when the two passes
    agree on every item.
    """
    golds = [gold for _, gold in candidate]
    if golds != [gold for _, gold in reference]:
        raise ValueError("paired accuracy test: the two passes were not scored on the same items")
    difference = variance = 0.0
    for (chosen, gold), (previous, _), weight in zip(candidate, reference, label_weights(golds, balanced)):
        change = int(chosen == gold) - int(previous == gold)
        if change:
            difference, variance = difference + weight * change, variance + weight**2
    return difference / math.sqrt(variance) if variance else 0.0


def label_summary(choices: list[tuple[int, int]]) -> dict:
    """Accuracy of label choices, balanced accuracy (the mean over gold labels of the share of
    that label's items chosen right: a model that always answers "False" scores 0.5 on true/false
    whatever the label mix, not the share of false items) and the share of the most chosen label
    (1.0 = always the same answer)."""
    if not choices:
        return {"label_accuracy": None, "label_balanced_accuracy": None, "label_examples": 0, "top_label_share": None}
    chosen = [c for c, _ in choices]
    top = max(chosen.count(c) for c in set(chosen))
    weights = label_weights([g for _, g in choices], balanced=True)
    return {
        "label_accuracy": sum(c == g for c, g in choices) / len(choices),
        "label_balanced_accuracy": sum(w for (c, g), w in zip(choices, weights) if c == g),
        "label_examples": len(choices),
        "top_label_share": top / len(choices),
    }


def initial_selection_state() -> dict:
    return {"best_score": -math.inf, "best_val_loss": math.inf, "best_step": 0, "evals_without_improvement": 0}


class Selector:
    """Scores validation results and decides which replaces the kept weights.

    It reads and writes the selection fields of the recipe's `state` dict (checkpointed with it):
    best_score, best_val_loss, best_step, evals_without_improvement, top_val_accuracy and
    top_val_choices (the best label accuracy seen at any validation and its per-item choices)."""

    def __init__(self, config: SelectionConfig, min_delta: float = 0.0, patience: int = 4):
        self.config, self.min_delta, self.patience = config, min_delta, patience

    def accuracy(self, result: dict) -> float | None:
        """The accuracy selection compares: balanced (default) or plain; None when it is switched off."""
        key = "label_balanced_accuracy" if self.config.balanced else "label_accuracy"
        return result.get(key) if self.config.use_label_accuracy else None

    def score(self, result: dict) -> float:
        """The recorded score (higher is better): label accuracy (balanced by default) minus
        `selection.loss_weight` × answer loss; the answer loss alone when no row has a label.
        Shown in the learning curves; `improves` decides."""
        return (self.accuracy(result) or 0.0) - self.config.loss_weight * result["loss"]

    def improves(self, result: dict, state: dict) -> bool:
        """Whether a validation result replaces the kept checkpoint.

        Label accuracy decides when it differs from the best accuracy seen so far by more than
        chance, judged on the same validation items (`paired_accuracy_z`: only the items the two
        passes answer differently carry information) beyond `selection.noise_z`: better beyond it
        wins, worse beyond it loses. Within it, the answer loss decides. On a small split a plain
        score (accuracy − w × loss) lets noise pick: seen, 27 labelled validation rows, a chance
        0.555 at step 23 beat every later checkpoint (0.34–0.53, loss 0.084 → 0.042). Without
        labelled rows (or with `use_label_accuracy` off) the score alone decides; without both
        passes' per-item choices, the loss does."""
        accuracy, top = self.accuracy(result), state.get("top_val_accuracy")
        if accuracy is None or top is None:
            return result["score"] > state["best_score"] + self.min_delta
        if result.get("choices") and state.get("top_val_choices"):
            z = paired_accuracy_z(result["choices"], state["top_val_choices"], self.config.balanced)
            result["paired_z"] = z  # shown in the validation log line and kept in the history
            if z > self.config.noise_z:
                return True
            if z < -self.config.noise_z:
                return False
        return result["loss"] < state["best_val_loss"] - self.min_delta

    def keep(self, result: dict, state: dict) -> None:
        """`result` is the best so far: record its numbers (the caller keeps its weights)."""
        state["best_score"], state["best_step"], state["evals_without_improvement"] = result["score"], state["step"], 0
        state["best_val_loss"], state["best_val_label_accuracy"] = result["loss"], result["label_accuracy"]
        state["best_val_top_label_share"] = result["top_label_share"]
        state["best_val_label_balanced_accuracy"] = result.get("label_balanced_accuracy")

    def note_accuracy(self, result: dict, state: dict) -> None:
        """The best label accuracy seen at any validation and its per-item choices (the bar of `improves`)."""
        accuracy = self.accuracy(result)
        if accuracy is not None and accuracy > (state.get("top_val_accuracy") or -math.inf):
            state["top_val_accuracy"], state["top_val_choices"] = accuracy, result.get("choices")

    def judge(self, result: dict, state: dict) -> tuple[bool, bool]:
        """(kept, patience exhausted) for a validation after training steps."""
        improved = self.improves(result, state)
        if improved:
            self.keep(result, state)
        else:
            state["evals_without_improvement"] += 1
        self.note_accuracy(result, state)
        return improved, state["evals_without_improvement"] >= self.patience
