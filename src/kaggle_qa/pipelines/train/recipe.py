"""The QLoRA fine-tuning recipe: one readable class, torchtune style.

Features
- Loss on answer tokens (and EOS) only, and logits computed only at those positions:
  the transformer body runs on the whole batch, its hidden states are gathered where
  labels != -100, and only those rows go through the 262k-token LM head (softcapped when
  the config says so). The head is most of the compute of a small Gemma.
- Length-grouped batches (HF `group_by_length` style megabatches) with right padding only
  up to the longest example of each batch; token-weighted loss across gradient accumulation.
- bf16 autocast (AMX on CPU), cosine schedule with warmup, grad-norm clipping, weight decay,
  paged AdamW 32-bit on CUDA (bitsandbytes), torch AdamW on CPU (logged).
- Validation every N optimizer steps; the best LoRA weights are kept (best-only adapter);
  early stopping after `early_stopping_patience` evaluations without improvement.
- Checkpoints (LoRA weights, optimizer, scheduler, RNG, step, data order, history, best
  weights) every N steps in `checkpoint_dir`, written atomically, so a run killed with
  kill -9 resumes from its last checkpoint; the directory is removed after success.

Errors
- `FloatingPointError` when a training or validation loss is NaN/inf.
- `ValueError` when a checkpoint in `checkpoint_dir` belongs to a run with other settings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
import resource
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from kaggle_qa.modeling import (
    head_logits,
    keep_4bit_weights_trainable,
    load_model,
    model_identity,
    resolve_dtype,
)
from kaggle_qa.prompting import IGNORE_INDEX

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def length_grouped_batches(
    lengths: list[int], batch_size: int, group_size: int, seed: int
) -> list[list[int]]:
    """Shuffle, then sort each megabatch of `batch_size * group_size` by length: little padding."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * group_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def chunk_grouped_batches(groups: list[str], lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches that keep the rows of one chunk together (shuffled chunks, rows sorted by length
    within a chunk): a true statement and its false edit about the same sentence then meet in
    one gradient step, a minimal pair whose only difference is what decides the label. Rows of
    one chunk share its context, so there is little padding too."""
    rng = random.Random(seed)
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    keys = sorted(by_group)
    rng.shuffle(keys)
    order = []
    for key in keys:
        rows = by_group[key]
        rng.shuffle(rows)
        order += rows
    batches = [sorted(order[i : i + batch_size], key=lambda j: -lengths[j]) for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict], pad_token_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example, rounded up to a `multiple` (positions stay 0..n-1
    for every row; padding is masked out of attention and loss).

    The rounding bounds the number of distinct batch shapes: on CPU every new shape gets its own
    oneDNN kernels and buffers, and with one shape per length a run slowed from 3.8 to 5.4 s per
    step over 40 steps while its memory grew; rounded to 32: 3.8 to 4.4 (benchmarks/bench_padding.py)."""
    width = max(len(e["input_ids"]) for e in examples)
    width = -(-width // max(multiple, 1)) * max(multiple, 1)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _head_loss_sum(head, softcap, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    losses = F.cross_entropy(head_logits(head, softcap, hidden), targets, reduction="none")
    return (losses * weights).sum()


def body_hidden(causal_lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the transformer body (no LM head) for a right-padded batch."""
    return causal_lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state


def answer_loss_sum(
    causal_lm, batch: dict[str, torch.Tensor], head_chunk_tokens: int, hidden: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over label positions, with logits computed only there.

    `batch["loss_weights"]` (optional, same shape as labels) weights each target token, e.g.
    to stress the label word of a true/false answer; the returned count is the number of
    target tokens either way.
    """
    if hidden is None:
        hidden = body_hidden(causal_lm, batch)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    weights = batch.get("loss_weights")
    weights = torch.ones_like(targets, dtype=torch.float32) if weights is None else weights[:, 1:]
    hidden, targets, weights = hidden[:, :-1][keep], targets[keep], weights[keep]
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    chunks = list(zip(hidden.split(head_chunk_tokens), targets.split(head_chunk_tokens), weights.split(head_chunk_tokens)))
    if len(chunks) == 1:  # the common case: no recomputation needed
        total = _head_loss_sum(causal_lm.lm_head, softcap, *chunks[0])
    else:  # long answers: never hold all fp32 logits at once
        total = sum(
            checkpoint(_head_loss_sum, causal_lm.lm_head, softcap, h, t, w, use_reentrant=False)
            for h, t, w in chunks
        )
    return total, int(targets.numel())


def label_choices(causal_lm, batch: dict[str, torch.Tensor], hidden: torch.Tensor, examples: list[dict]) -> list[tuple[int, int]]:
    """(chosen, gold) label token of every labelled example of the batch, from the logits at its label position.

    The choice is the candidate (e.g. "True" vs "False") with the highest next-token logit
    after the prompt, the log-likelihood choice evaluation also makes.
    """
    rows = [(row, e) for row, e in enumerate(examples) if e.get("label_position", -1) > 0]
    if not rows:
        return []
    index = torch.tensor([row for row, _ in rows], device=hidden.device)
    positions = torch.tensor([e["label_position"] - 1 for _, e in rows], device=hidden.device)
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    logits = head_logits(causal_lm.lm_head, softcap, hidden[index, positions])
    choices = []
    for (row, example), row_logits in zip(rows, logits):
        candidates = example["label_candidates"]
        best = max(candidates, key=lambda token: float(row_logits[token]))
        choices.append((best, example["input_ids"][example["label_position"]]))
    return choices


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


@dataclass
class TrainResult:
    """What a finished run hands back: the model with its best LoRA weights loaded, and metrics."""

    model: object
    metrics: dict
    history: list[dict] = field(default_factory=list)


class LoRAFinetuneRecipe:
    """(Q)LoRA fine-tuning of a causal LM on tokenized examples; see the module docstring."""

    def __init__(self, base_model: str, params: dict, train_examples: list[dict], validation_examples: list[dict]):
        self.base_model = base_model
        self.params = params
        self.train_examples = train_examples
        self.validation_examples = validation_examples
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.checkpoint_dir = Path(params["checkpoint_dir"])
        self.compute_dtype = resolve_dtype(params["compute_dtype"])

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Model ((Q)LoRA), optimizer, schedule, data order; resume if a checkpoint exists."""
        p = self.params
        torch.manual_seed(p["seed"])
        random.seed(p["seed"])
        self._setup_model()
        self._setup_optimizer()
        self.batches_per_epoch = math.ceil(len(self.train_examples) / p["batch_size"])
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / p["gradient_accumulation_steps"])
        self.planned_steps = self.steps_per_epoch * p["epochs"]
        if p.get("max_steps"):
            self.planned_steps = min(self.planned_steps, p["max_steps"])
        self.state = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "total_steps": self.planned_steps,
            "eval_every": self._eval_every(self.planned_steps),
            "budget_planned": False,
            "best_score": -math.inf,
            "best_val_loss": math.inf,
            "best_step": 0,
            "evals_without_improvement": 0,
            "history": [],
            "elapsed_s": 0.0,
            "train_s": 0.0,
            "eval_s": 0.0,
            "trained_tokens": 0,
            "supervised_tokens": 0,
            "examples_seen": 0,
        }
        self._make_scheduler(self.planned_steps)
        self.best_lora_state: dict[str, torch.Tensor] | None = None
        self._resume_if_possible()

    @property
    def total_steps(self) -> int:
        return self.state["total_steps"]

    def _eval_every(self, total_steps: int) -> int:
        p = self.params
        if p.get("eval_every_steps"):
            return p["eval_every_steps"]
        return max(1, math.ceil(total_steps / p["evaluations_per_run"]))

    def _make_scheduler(self, total_steps: int, completed_steps: int = 0) -> None:
        """The LR schedule over `total_steps`, advanced to `completed_steps` (used when the budget re-plans the run)."""
        from transformers import get_scheduler

        p = self.params
        for group in self.optimizer.param_groups:
            group["lr"] = group.get("initial_lr", p["learning_rate"])
        self.scheduler = get_scheduler(
            p["lr_scheduler"],
            self.optimizer,
            num_warmup_steps=math.ceil(p["warmup_ratio"] * total_steps),
            num_training_steps=total_steps,
        )
        for _ in range(completed_steps):
            self.scheduler.step()

    def _setup_model(self) -> None:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        p, lora = self.params, self.params["lora"]
        quantization = p.get("quantization")
        if quantization:
            quantization = {**quantization, "compute_dtype": self.compute_dtype}
        # An unquantized base keeps fp32 weights and computes under bf16 autocast where bf16 is native:
        # measured 2.4x faster per training step on an AMX CPU than a bf16-weight model under autocast.
        weights_dtype = self.compute_dtype if quantization or self.device.type == "cuda" else "float32"
        model = load_model(self.base_model, dtype=weights_dtype, quantization=quantization)
        if not p.get("quantization"):
            model.to(self.device)
        # bitsandbytes must never repack the 4-bit weights for CPU inference during training:
        # its packed kernel has no autograd (see modeling.keep_4bit_weights_trainable).
        keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=p["gradient_checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if p["gradient_checkpointing"] and not p.get("quantization"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        config = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            bias=lora["bias"],
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, config)
        self.causal_lm = self.model.get_base_model()
        trainable, total = self.model.get_nb_trainable_parameters()
        logger.info(
            "LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%s, %s compute, 4-bit NF4 base=%s, "
            "grad checkpointing=%s)",
            lora["r"], lora["alpha"], lora["target_modules"], f"{trainable:,}", f"{total:,}",
            self.device, self.compute_dtype, bool(p.get("quantization")), p["gradient_checkpointing"],
        )

    def _setup_optimizer(self) -> None:
        p = self.params
        trainable = [param for param in self.model.parameters() if param.requires_grad]
        if p["optimizer"] == "paged_adamw_32bit" and self.device.type == "cuda":
            import bitsandbytes as bnb

            self.optimizer = bnb.optim.PagedAdamW32bit(
                trainable, lr=p["learning_rate"], weight_decay=p["weight_decay"]
            )
            logger.info("Optimizer: bitsandbytes PagedAdamW32bit")
        else:
            self.optimizer = torch.optim.AdamW(
                trainable, lr=p["learning_rate"], weight_decay=p["weight_decay"]
            )
            logger.info(
                "Optimizer: torch AdamW (%s requested; paged optimizers need CUDA)", p["optimizer"]
            )

    # ------------------------------------------------------------ checkpoints
    @functools.cached_property
    def _fingerprint(self) -> str:
        """Settings, base model and the training/validation data content: a checkpoint resumes only the same run.

        Computed once per run (it hashes every example's token ids), not at every checkpoint."""
        keys = {k: v for k, v in self.params.items() if k not in ("checkpoint_dir",)}
        data = hashlib.sha256()
        for examples in (self.train_examples, self.validation_examples):
            for example in examples:
                data.update(json.dumps([example["input_ids"], example["labels"]]).encode())
            data.update(b"|")
        blob = json.dumps([keys, model_identity(self.base_model), data.hexdigest()], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _lora_state(self) -> dict[str, torch.Tensor]:
        return {
            name: param.detach().to("cpu", copy=True)
            for name, param in self.model.named_parameters()
            if param.requires_grad
        }

    def _load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly where we are, written atomically."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "fingerprint": self._fingerprint,
            "state": self.state,
            "lora": self._lora_state(),
            "best_lora": self.best_lora_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
        }
        tmp = self.checkpoint_dir / f".{CHECKPOINT_FILE}.tmp"
        torch.save(payload, tmp)
        tmp.replace(self.checkpoint_dir / CHECKPOINT_FILE)
        logger.debug("Checkpoint at step %d → %s", self.state["step"], self.checkpoint_dir)

    def _resume_if_possible(self) -> None:
        path = self.checkpoint_dir / CHECKPOINT_FILE
        if not path.exists():
            return
        payload = torch.load(path, weights_only=False)
        if payload["fingerprint"] != self._fingerprint:
            raise ValueError(
                f"{path} belongs to a run with other parameters, data or base model; "
                "delete that folder to start afresh, or restore the settings to resume it"
            )
        self.state = payload["state"]
        self._load_lora_state(payload["lora"])
        self.best_lora_state = payload["best_lora"]
        self._make_scheduler(self.state["total_steps"])  # before the optimizer state, which restores the current lr
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        random.setstate(payload["rng"]["python"])
        logger.info(
            "Resuming from %s at step %d/%d (epoch %d, best validation score %.4f)",
            path, self.state["step"], self.total_steps, self.state["epoch"], self.state["best_score"],
        )

    # ----------------------------------------------------------------- loops
    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16"
        )

    def _batch(self, indices: list[int], examples: list[dict], weighted: bool = False) -> dict[str, torch.Tensor]:
        rows = [examples[i] for i in indices]
        batch = collate(rows, self.causal_lm.config.pad_token_id or 0, self.params.get("pad_to_multiple_of", 1))
        weight = self.params.get("label_token_weight", 1.0)
        if weighted and weight != 1.0:
            weights = torch.ones_like(batch["labels"], dtype=torch.float32)
            for row, example in enumerate(rows):
                if example.get("label_position", -1) > 0:
                    weights[row, example["label_position"]] = weight
            batch["loss_weights"] = weights
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def measure(self, examples: list[dict]) -> dict:
        """Answer loss (token-weighted mean) and label-choice accuracy of the current weights on `examples`."""
        keep_4bit_weights_trainable(self.model)  # the eval-mode forward below must not repack 4-bit weights
        self.model.eval()
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        size = self.params["eval_batch_size"]
        total, count, choices = 0.0, 0, []
        for start in range(0, len(order), size):
            indices = order[start : start + size]
            batch = self._batch(indices, examples)
            with self._autocast():
                hidden = body_hidden(self.causal_lm, batch)
                loss_sum, n = answer_loss_sum(self.causal_lm, batch, self.params["head_chunk_tokens"], hidden)
                choices += label_choices(self.causal_lm, batch, hidden, [examples[i] for i in indices])
            total, count = total + loss_sum.item(), count + n
        self.model.train()
        return {"loss": total / max(count, 1), **label_summary(choices), "choices": choices}

    def evaluate(self) -> dict:
        """Validation loss, label accuracy and the selection score (higher is better)."""
        started = time.perf_counter()
        result = self.measure(self.validation_examples)
        self.state["eval_s"] += time.perf_counter() - started
        if not math.isfinite(result["loss"]):
            raise FloatingPointError(f"validation loss is {result['loss']} at step {self.state['step']}")
        result["score"] = self.selection_score(result)
        return result

    def selection_score(self, result: dict) -> float:
        """What picks the kept checkpoint: label accuracy (balanced by default) minus
        `selection.loss_weight` × answer loss.

        Accuracy of the label decision is what a user sees for true/false and yes/no questions;
        balanced accuracy keeps a checkpoint that answers one label to everything from winning by
        the label mix of a small validation split (seen: 0.595 plain accuracy, 78 % "False"); the
        answer loss breaks ties and is all there is when no validation row has a label.
        """
        accuracy = self._selection_accuracy(result)
        return (accuracy or 0.0) - self.params["selection"]["loss_weight"] * result["loss"]

    def _selection_accuracy(self, result: dict) -> float | None:
        """The accuracy selection compares: balanced (default) or plain; None when it is switched off."""
        selection = self.params["selection"]
        key = "label_balanced_accuracy" if selection.get("balanced", True) else "label_accuracy"
        return result.get(key) if selection["use_label_accuracy"] else None

    def noise_margin(self, n_labels: int) -> float:
        """How far apart two label accuracies on `n_labels` validation items can be by chance when
        nothing is known of which items each got right: `selection.noise_z` standard errors of their
        difference at the worst case (p = 0.5), z·sqrt(2·0.25/n). At z = 2: 0.27 on 27 items, 0.14 on
        96. Used only when the per-item choices of the two passes are not both known (`improves`
        compares the choices themselves, a much sharper test). z = 1 was too tight: the best of eight
        chance draws sets the bar (a base model's 0.62 on 27 rows), and a later checkpoint of lower
        loss at 0.40 counted as worse."""
        return self.params["selection"].get("noise_z", 2.0) * math.sqrt(0.5 / max(n_labels, 1))

    def improves(self, result: dict) -> bool:
        """Whether a validation result replaces the kept checkpoint.

        Label accuracy decides when it differs from the best accuracy seen so far by more than
        chance: better beyond it wins, worse beyond it loses. Within it, the answer loss decides.
        Chance is judged on the same validation items (`paired_accuracy_z`: only the items the two
        passes answer differently carry information), beyond `selection.noise_z`; without both
        passes' choices, by the unpaired worst-case `noise_margin`. On a small split a plain score
        (accuracy − w × loss) lets noise pick: seen, 27 labelled validation rows, a chance 0.555 at
        step 23 beat every later checkpoint (0.34–0.53, loss 0.084 → 0.042) and early stopping ended
        the run at step 115 of 177. The unpaired margin was too blunt the other way: on the published
        v3 (44 labelled rows, margin 0.21) a pass at balanced accuracy 0.88 lost to the kept 0.69 by
        its loss. Without labelled rows (or with `use_label_accuracy` off) the score alone decides."""
        s, min_delta = self.state, self.params["early_stopping_min_delta"]
        accuracy, top = self._selection_accuracy(result), s.get("top_val_accuracy")
        if accuracy is None or top is None:
            return result["score"] > s["best_score"] + min_delta
        z_bar = self.params["selection"].get("noise_z", 2.0)
        if result.get("choices") and s.get("top_val_choices"):
            z = paired_accuracy_z(result["choices"], s["top_val_choices"], self.params["selection"].get("balanced", True))
            result["paired_z"] = z  # shown in the validation log line and kept in the history
            if z > z_bar:
                return True
            if z < -z_bar:
                return False
        else:
            margin = self.noise_margin(result.get("label_examples") or 0)
            if accuracy > top + margin:
                return True
            if accuracy < top - margin:
                return False
        return result["loss"] < s["best_val_loss"] - min_delta

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        lengths = [len(e["input_ids"]) for e in self.train_examples]
        p = self.params
        if p.get("batch_grouping", "length") == "chunk":
            groups = [e.get("group", str(i)) for i, e in enumerate(self.train_examples)]
            return chunk_grouped_batches(groups, lengths, p["batch_size"], p["seed"] + epoch)
        return length_grouped_batches(lengths, p["batch_size"], p["length_group_size"], p["seed"] + epoch)

    def _keep_best(self, result: dict) -> None:
        """The validation `result` is the best so far: keep its weights and numbers."""
        s = self.state
        s["best_score"], s["best_step"], s["evals_without_improvement"] = result["score"], s["step"], 0
        s["best_val_loss"], s["best_val_label_accuracy"] = result["loss"], result["label_accuracy"]
        s["best_val_top_label_share"] = result["top_label_share"]
        s["best_val_label_balanced_accuracy"] = result.get("label_balanced_accuracy")
        self.best_lora_state = self._lora_state()

    def _note_accuracy(self, result: dict) -> None:
        """The best label accuracy seen at any validation and its per-item choices (the bar of `improves`)."""
        accuracy = self._selection_accuracy(result)
        if accuracy is not None and accuracy > (self.state.get("top_val_accuracy") or -math.inf):
            self.state["top_val_accuracy"], self.state["top_val_choices"] = accuracy, result.get("choices")

    def _record_history(self, result: dict, train_loss: float | None, lr: float) -> None:
        s = self.state
        s["history"].append(
            {"step": s["step"], "epoch": s["epoch"], "train_loss": train_loss, "val_loss": result["loss"],
             "val_label_accuracy": result["label_accuracy"], "val_top_label_share": result["top_label_share"],
             "val_label_balanced_accuracy": result.get("label_balanced_accuracy"),
             "val_paired_z": result.get("paired_z"), "score": result["score"], "lr": lr,
             "elapsed_s": round(s["elapsed_s"], 1)}
        )

    def _record_eval(self, train_loss: float | None) -> bool:
        """Validate, keep the best weights; return True when patience is exhausted."""
        p, s = self.params, self.state
        result = self.evaluate()
        improved = self.improves(result)
        if improved:
            self._keep_best(result)
        else:
            s["evals_without_improvement"] += 1
        self._note_accuracy(result)
        self._record_history(result, train_loss, self.scheduler.get_last_lr()[0])
        accuracy = "-" if result["label_accuracy"] is None else (
            f"{result['label_accuracy']:.3f} (balanced {result['label_balanced_accuracy']:.3f}, "
            f"top label {result['top_label_share']:.0%}"
            + ("" if result.get("paired_z") is None else f", paired z {result['paired_z']:+.2f} vs the best so far")
            + ")"
        )
        logger.info(
            "step %d/%d epoch %d: train loss %s, validation loss %.4f, label accuracy %s%s",
            s["step"], self.total_steps, s["epoch"],
            "-" if train_loss is None else f"{train_loss:.4f}", result["loss"], accuracy,
            " (best, kept)" if improved else f" (no improvement {s['evals_without_improvement']}/{p['early_stopping_patience']})",
        )
        return s["evals_without_improvement"] >= p["early_stopping_patience"]

    def _plan_for_budget(self) -> None:
        """After the first steps, size the run (steps, LR schedule, evaluation cadence) to the time budget."""
        p, s = self.params, self.state
        budget = p.get("time_budget_s")
        if not budget or s["budget_planned"] or s["step"] < p["budget_calibration_steps"]:
            return
        s["budget_planned"], s["budget_planned_at"] = True, s["step"]
        seconds_per_token = s["train_s"] / max(s["trained_tokens"], 1)
        tokens_per_step = sum(len(e["input_ids"]) for e in self.train_examples) / self.steps_per_epoch
        seconds_per_step = seconds_per_token * tokens_per_step
        evals_so_far = max(len(s["history"]), 1)
        seconds_per_eval = s["eval_s"] / evals_so_far
        remaining = budget - s["elapsed_s"]
        # validation passes get at most `max_validation_share` of the budget (at least two of them)
        evaluations = p.get("evaluations_per_run") or math.ceil(self.planned_steps / p["eval_every_steps"])
        share = p.get("max_validation_share", 1.0)
        evaluations = max(2, min(evaluations, int(share * budget / max(seconds_per_eval, 1e-9))))
        affordable = s["step"] + int(max(remaining - evaluations * seconds_per_eval, 0) / seconds_per_step)
        s["budget_estimate"] = {
            "seconds_per_step": round(seconds_per_step, 2), "seconds_per_validation": round(seconds_per_eval, 2),
            "affordable_steps": affordable, "planned_steps": self.planned_steps,
        }
        s["budget_estimate"]["validations"] = evaluations
        if affordable < s["total_steps"]:
            s["total_steps"] = max(affordable, s["step"] + 1)
            s["eval_every"] = p.get("eval_every_steps") or max(1, math.ceil(s["total_steps"] / evaluations))
            self._make_scheduler(s["total_steps"], completed_steps=s["step"])
            logger.warning(
                "Time budget %.0f s: ~%.1f s per step and %.1f s per validation here, so %d of %d planned steps "
                "(%.0f%% of the epochs asked for); the LR schedule is re-planned to end there",
                budget, seconds_per_step, seconds_per_eval, s["total_steps"], self.planned_steps,
                100 * s["total_steps"] / self.planned_steps,
            )
        else:
            logger.info(
                "Time budget %.0f s: ~%.1f s per step here, all %d planned steps fit", budget, seconds_per_step, self.planned_steps
            )

    def _replan_for_budget(self) -> None:
        """After each validation, re-measure the pace so far and re-plan the run to what the rest
        of the budget holds, with the LR schedule re-planned to reach its end there: shorter when
        the planned steps no longer fit (instead of a hard stop half-way down the schedule), longer
        (up to the steps the epochs allow) when the first plan was too cautious. Only when the
        change is more than `budget_replan_tolerance` of the run.

        The first plan rests on `budget_calibration_steps` steps. Seen on an Intel AMX CPU: 3.8 s
        per step over the first 3, then 5.5 s, 198 steps planned for a budget that held ~150; on an
        AMD AVX512-BF16 CPU: 7.7 s over the first 3, then 6.6 s on average, 96 steps planned and
        the loop ended 94 s inside its budget."""
        p, s = self.params, self.state
        budget = p.get("time_budget_s")
        if not budget or not s["budget_planned"] or s["step"] >= s["total_steps"]:
            return
        seconds_per_step = s["train_s"] / max(s["step"], 1)
        seconds_per_eval = s["eval_s"] / max(len(s["history"]), 1)
        remaining = budget - s["elapsed_s"]
        every = max(s["eval_every"], 1)

        def fits(total_steps: int) -> bool:  # the steps left and the validations they bring
            left = total_steps - s["step"]
            return left * seconds_per_step + math.ceil(left / every) * seconds_per_eval <= remaining

        affordable = s["step"] + int(max(remaining, 0) / max(seconds_per_step + seconds_per_eval / every, 1e-9))
        while fits(affordable + 1) and affordable < self.planned_steps:
            affordable += 1
        while affordable > s["step"] and not fits(affordable):
            affordable -= 1
        affordable = min(affordable, self.planned_steps)
        if abs(affordable - s["total_steps"]) <= s["total_steps"] * p.get("budget_replan_tolerance", 0.03):
            return
        before, s["total_steps"] = s["total_steps"], max(affordable, s["step"] + 1)
        self._make_scheduler(s["total_steps"], completed_steps=s["step"])
        s.setdefault("budget_replans", []).append(
            {"at_step": s["step"], "seconds_per_step": round(seconds_per_step, 2), "from_steps": before,
             "to_steps": s["total_steps"]}
        )
        logger.warning(
            "Time budget %.0f s: %.1f s per step so far, so the run ends at step %d instead of %d; "
            "the LR schedule is re-planned to end there", budget, seconds_per_step, s["total_steps"], before,
        )

    def train(self) -> TrainResult:
        """Run (or finish) training; return the model holding the best LoRA weights."""
        p, s = self.params, self.state
        accumulation = p["gradient_accumulation_steps"]
        run_started = time.perf_counter() - s["elapsed_s"]
        if s["step"] == 0 and not s["history"]:
            base = self.evaluate()
            s["base_val_loss"], s["base_val_label_accuracy"] = base["loss"], base["label_accuracy"]
            s["base_val_top_label_share"] = base["top_label_share"]
            self._record_history(base, None, 0.0)
            self._keep_best(base)  # the base model is step 0 of the selection
            self._note_accuracy(base)
            logger.info("Base model before training: validation loss %.4f, label accuracy %s", base["loss"], base["label_accuracy"])
        keep_4bit_weights_trainable(self.model)
        self.model.train()
        window_loss, window_tokens = 0.0, 0
        stop = s["step"] >= self.total_steps or s.get("stopped_early", False)
        bar = tqdm(total=self.total_steps, initial=s["step"], desc="train", unit="step", file=sys.stderr)
        while not stop and s["epoch"] < p["epochs"]:
            batches = self._epoch_batches(s["epoch"])
            groups = [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]
            for group_index in range(s["batch_in_epoch"] // accumulation, len(groups)):
                step_started = time.perf_counter()
                group = groups[group_index]
                tensors = [self._batch(indices, self.train_examples, weighted=True) for indices in group]
                n_supervised = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in tensors)
                step_loss = 0.0
                for batch in tensors:
                    with self._autocast():
                        loss_sum, _ = answer_loss_sum(self.causal_lm, batch, p["head_chunk_tokens"])
                    if not torch.isfinite(loss_sum):
                        raise FloatingPointError(
                            f"training loss is {loss_sum.item()} at step {s['step'] + 1} (epoch {s['epoch']}): "
                            f"lower learning_rate (now {p['learning_rate']}) or check the data; "
                            f"the last good checkpoint is in {self.checkpoint_dir}"
                        )
                    (loss_sum / n_supervised).backward()
                    step_loss += loss_sum.item()
                    s["trained_tokens"] += int(batch["attention_mask"].sum())
                    s["examples_seen"] += int(batch["input_ids"].shape[0])
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [q for q in self.model.parameters() if q.requires_grad], p["max_grad_norm"]
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                s["train_s"] += time.perf_counter() - step_started
                s["step"] += 1
                s["batch_in_epoch"] = (group_index + 1) * accumulation
                s["supervised_tokens"] += n_supervised
                window_loss, window_tokens = window_loss + step_loss, window_tokens + n_supervised
                s["last_train_loss"] = step_loss / n_supervised
                s["elapsed_s"] = time.perf_counter() - run_started
                self._plan_for_budget()
                bar.total = self.total_steps
                bar.update(1)
                bar.set_postfix(loss=f"{s['last_train_loss']:.3f}", grad=f"{float(grad_norm):.2f}")
                over_budget = (
                    s.get("budget_planned_at", math.inf) < s["step"]
                    and s["elapsed_s"] > p["time_budget_s"] * p["budget_hard_stop"]
                )
                if over_budget and s["step"] < self.total_steps:
                    logger.warning("Time budget exceeded at step %d of %d: stopping here", s["step"], self.total_steps)
                    s["budget_cut_at_step"] = s["step"]
                    s["total_steps"] = s["step"]
                if s["step"] % s["eval_every"] == 0 or s["step"] >= self.total_steps:
                    s["window_train_loss"] = window_loss / window_tokens
                    window_loss, window_tokens = 0.0, 0
                    if self._record_eval(s["window_train_loss"]):
                        s["stopped_early"] = True
                        logger.info("Early stopping at step %d: best step %d", s["step"], s["best_step"])
                    s["elapsed_s"] = time.perf_counter() - run_started
                    self._replan_for_budget()
                if s["step"] >= self.total_steps or s.get("stopped_early"):
                    stop = True
                if stop or s["step"] % p["checkpoint_every_steps"] == 0:
                    self.save_checkpoint()
                if stop:
                    break
            else:
                s["epoch"], s["batch_in_epoch"] = s["epoch"] + 1, 0
        bar.close()
        fit_rows = self._training_fit_sample()
        if s["best_step"] != s["step"]:  # the last weights too: underfitting vs. an early pick by selection
            self._measure_training_fit("train_fit_last", fit_rows)
        self._load_lora_state(self.best_lora_state)
        self._measure_training_fit("train_fit", fit_rows)
        self.model.eval()
        return TrainResult(self.model, self._metrics(), s["history"])

    def _training_fit_sample(self) -> list[dict]:
        """A seeded sample of the training rows (`train_fit_examples` labelled ones, a quarter as many
        others) on which the fit of the kept and of the last weights is measured."""
        n = self.params.get("train_fit_examples")
        if not n:
            return []
        labelled = [e for e in self.train_examples if e.get("label_position", -1) > 0]
        others = [e for e in self.train_examples if e.get("label_position", -1) <= 0]
        rng = random.Random(self.params["seed"])
        return rng.sample(labelled, min(n, len(labelled))) + rng.sample(others, min(n // 4, len(others)))

    def _measure_training_fit(self, key: str, rows: list[dict]) -> None:
        """Label accuracy and loss of the weights now loaded on `rows` (training rows), recorded
        under `key`: is it fitting at all?"""
        if rows:
            fit = self.measure(rows)
            self.state[key] = {"loss": fit["loss"], "label_accuracy": fit["label_accuracy"],
                               "top_label_share": fit["top_label_share"], "examples": len(rows)}

    def _metrics(self) -> dict:
        s, p = self.state, self.params
        elapsed = max(s["elapsed_s"], 1e-9)
        training = max(s["train_s"], 1e-9)
        if self.device.type == "cuda":
            peak = {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
        else:
            peak = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        fit = s.get("train_fit", {})
        last_fit = s.get("train_fit_last", fit)
        n_val_labels = sum(1 for e in self.validation_examples if e.get("label_position", -1) > 0)
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
            "selection": "%slabel accuracy beyond chance (paired test on the same %d labelled rows, |z| > %.1f), "
                         "else answer loss, on the validation split" % (
                "balanced " if p["selection"].get("balanced", True) else "", n_val_labels,
                p["selection"].get("noise_z", 2.0))
            if p["selection"]["use_label_accuracy"] else "answer loss on the validation split",
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
            "total_steps_planned": self.planned_steps,
            "time_budget_s": p.get("time_budget_s"),
            "budget_estimate": s.get("budget_estimate"),
            "budget_cut": s["total_steps"] < self.planned_steps,
            "budget_cut_at_step": s.get("budget_cut_at_step"),
            "budget_replans": s.get("budget_replans", []),
            "examples_seen": s["examples_seen"],
            "tokens_seen": s["trained_tokens"],
            "supervised_tokens_seen": s["supervised_tokens"],
            "epochs_completed": s["examples_seen"] / max(len(self.train_examples), 1),
            "stopped_early": bool(s.get("stopped_early", False)),
            "duration_s": elapsed,
            "training_s": s["train_s"],
            "validation_s": s["eval_s"],
            "tokens_per_s": s["trained_tokens"] / training,  # time in training steps only
            "supervised_tokens_per_s": s["supervised_tokens"] / training,
            "train_examples": len(self.train_examples),
            "validation_examples": len(self.validation_examples),
            "device": self.device.type,
            "compute_dtype": self.compute_dtype,
            "quantized_base": bool(p.get("quantization")),
            "label_token_weight": p.get("label_token_weight", 1.0),
            "optimizer": type(self.optimizer).__name__,
            **peak,
        }

    def cleanup(self) -> None:
        """Remove the checkpoints of a finished run."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
