"""Adapter strength: how much of the fine-tuned weight change the adapter keeps.

The kept adapter's weight delta is scaled by a strength ``s`` in (0, 1] (weight-space
interpolation between the base and the fine-tuned model, WiSE-FT: Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022). For LoRA this is exact and free: the delta is
``(lora_alpha / r) * B @ A``, so an adapter of strength ``s`` is the same weights with
``lora_alpha * s`` in its ``adapter_config.json`` (peft, vLLM and every other LoRA loader read it).

Why: a model trained on one teacher's answers becomes sure of that teacher's wording. On answers
written by someone else its loss rises above the base's although its own validation loss keeps
falling, and a weaker adapter gives up little of the gain on its own answers while losing that
rise (docs/train.md, "Adapter strength", measured by benchmarks/adapter_strength.py). So after
training, ``s`` is chosen where that loss is lowest on answers written by someone else: a
chunk-disjoint part of ``qa_cross_teacher`` (:func:`others_selection_examples`; evaluate never
scores those chunks) and the selection part of the user's question file. Without either, ``train.strength.fallback`` is used, and the run says so.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from kaggle_qa.qa_schema import group_key, validate_rows
from kaggle_qa.user_questions import hash_fraction

from .data import OTHERS_SET

logger = logging.getLogger(__name__)

OTHERS_SALT = "strength-selection"  # the hash that sets a chunk of qa_cross_teacher aside for choosing s


def others_part(rows: list[dict], share: float) -> list[dict]:
    """The rows of qa_cross_teacher whose chunk falls in the `share` set aside for choosing the strength."""
    return [row for row in rows if hash_fraction(group_key(row), OTHERS_SALT) < share]


def others_selection_examples(qa_cross_teacher: list[dict] | None, base_model: str, params: dict) -> list[dict]:
    """Tokenized examples (with their gold context, as evaluate scores that set) of a seeded sample of
    ``train.strength.others.max_rows`` rows from the chunk-disjoint part of qa_cross_teacher, tagged
    ``set: others_selection``; [] when the share or the row count is 0 or there is no such set."""
    from .config import TrainConfig
    from .nodes import _tokenize_rows, _tokenizer

    others = TrainConfig.from_dict(params).strength.others  # conf/base's values for what params leave out
    if not qa_cross_teacher or others.share <= 0 or others.max_rows <= 0:
        logger.info("Answers by others to choose the adapter strength on: none from qa_cross_teacher "
                    "(train.strength.others: share %s, max_rows %s)", others.share, others.max_rows)
        return []
    rows = others_part(validate_rows(qa_cross_teacher, "qa_cross_teacher"), others.share)
    rows = random.Random(others.seed).sample(rows, min(others.max_rows, len(rows)))
    dropped: Counter = Counter()
    examples = [dict(example, set=OTHERS_SET) for example in
                _tokenize_rows(_tokenizer(base_model), rows, params["max_length"], OTHERS_SET, dropped, False)]
    logger.info("Answers by others to choose the adapter strength on: %d rows of qa_cross_teacher from %d chunks "
                "(evaluate does not score those chunks; %s)", len(examples),
                len({e["group"] for e in examples}), dict(dropped) or "none dropped")
    return examples


def lora_layers(model) -> list:
    """The LoRA-wrapped modules of a peft model (each holds ``scaling[adapter] = lora_alpha / r``)."""
    return [module for module in model.modules()
            if isinstance(getattr(module, "scaling", None), dict) and hasattr(module, "lora_A")]


class StrengthSetter:
    """Sets the strength of every LoRA layer of `model` relative to its trained scaling."""

    def __init__(self, model):
        self.model = model
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError("the model has no LoRA layer: there is no adapter strength to set")
        self.trained = [dict(layer.scaling) for layer in self.layers]
        self.strength = 1.0

    def set(self, strength: float) -> None:
        for layer, trained in zip(self.layers, self.trained):
            for name, value in trained.items():
                layer.scaling[name] = value * strength
        self.strength = strength

    def record(self, adapter_name: str = "default") -> None:
        """Write the strength into the adapter's config (lora_alpha x s), so the saved adapter is the model measured."""
        config = self.model.peft_config[adapter_name]
        config.lora_alpha = config.lora_alpha * self.strength
        self.trained = [dict(layer.scaling) for layer in self.layers]
        self.strength = 1.0


def choose_strength(measure, setter: StrengthSetter, examples: list[dict], grid: list[float],
                    fallback: float) -> dict:
    """Measure the answer loss of `examples` at strength 0 (the base) and every strength of `grid`;
    leave the model at the strength with the lowest loss (`fallback` without examples) and return
    the table. `measure(examples)` returns ``{"loss": ...}`` for the weights now set."""
    grid = sorted({float(s) for s in grid})
    if not examples:
        setter.set(fallback)
        logger.info("Adapter strength %.3f (train.strength.fallback): no answers written by others to choose on", fallback)
        return {"chosen": fallback, "chosen_by": "fallback (no answers by others)", "examples": 0, "table": []}
    table = []
    for strength in [0.0, *grid]:
        setter.set(strength)
        table.append({"strength": strength, "loss": measure(examples)["loss"]})
        logger.info("Adapter strength %.3f: answer loss %.4f on %d answers written by others", strength,
                    table[-1]["loss"], len(examples))
    best = min((row for row in table if row["strength"] > 0), key=lambda row: (row["loss"], -row["strength"]))
    setter.set(best["strength"])
    return {"chosen": best["strength"], "chosen_by": "lowest answer loss on answers written by others",
            "examples": len(examples), "groups": len({e.get("group") for e in examples}), "table": table,
            "base_loss": table[0]["loss"], "chosen_loss": best["loss"],
            "full_strength_loss": next((row["loss"] for row in table if row["strength"] == 1.0), None)}
