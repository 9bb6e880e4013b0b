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

import hashlib
import json
import logging
import math
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from kaggle_qa.modeling import head_logits, load_model, model_identity, resolve_dtype
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


def collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example (positions stay 0..n-1 for every row)."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _head_loss_sum(head, softcap, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head_logits(head, softcap, hidden), targets, reduction="sum")


def answer_loss_sum(
    causal_lm, batch: dict[str, torch.Tensor], head_chunk_tokens: int
) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over label positions, with logits computed only there."""
    hidden = causal_lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[:, :-1][keep], targets[keep]
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    chunks = list(zip(hidden.split(head_chunk_tokens), targets.split(head_chunk_tokens)))
    if len(chunks) == 1:  # the common case: no recomputation needed
        total = _head_loss_sum(causal_lm.lm_head, softcap, *chunks[0])
    else:  # long answers: never hold all fp32 logits at once
        total = sum(
            checkpoint(_head_loss_sum, causal_lm.lm_head, softcap, h, t, use_reentrant=False)
            for h, t in chunks
        )
    return total, int(targets.numel())


@dataclass
class TrainResult:
    """What a finished run hands back: the model with its best LoRA weights loaded, and metrics."""

    model: object
    metrics: dict
    history: list[dict] = field(default_factory=list)


class LoRAFinetuneRecipe:
    """QLoRA fine-tuning of a causal LM on tokenized examples; see the module docstring."""

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
        """Model (4-bit + LoRA), optimizer, schedule, data order; resume if a checkpoint exists."""
        p = self.params
        torch.manual_seed(p["seed"])
        random.seed(p["seed"])
        self._setup_model()
        self._setup_optimizer()
        self.batches_per_epoch = math.ceil(len(self.train_examples) / p["batch_size"])
        steps_per_epoch = math.ceil(self.batches_per_epoch / p["gradient_accumulation_steps"])
        self.total_steps = steps_per_epoch * p["epochs"]
        if p.get("max_steps"):
            self.total_steps = min(self.total_steps, p["max_steps"])
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            p["lr_scheduler"],
            self.optimizer,
            num_warmup_steps=math.ceil(p["warmup_ratio"] * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.state = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "best_val_loss": math.inf,
            "best_step": 0,
            "evals_without_improvement": 0,
            "history": [],
            "elapsed_s": 0.0,
            "trained_tokens": 0,
            "supervised_tokens": 0,
        }
        self.best_lora_state: dict[str, torch.Tensor] | None = None
        self._resume_if_possible()

    def _setup_model(self) -> None:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        p, lora = self.params, self.params["lora"]
        quantization = p.get("quantization")
        if quantization:
            quantization = {**quantization, "compute_dtype": self.compute_dtype}
        model = load_model(self.base_model, dtype=self.compute_dtype, quantization=quantization)
        if not p.get("quantization"):
            model.to(self.device)
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
            "LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%s, %s compute, 4-bit=%s, "
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
    def _fingerprint(self) -> str:
        keys = {k: v for k, v in self.params.items() if k not in ("checkpoint_dir",)}
        blob = json.dumps(
            [keys, model_identity(self.base_model), len(self.train_examples)], sort_keys=True, default=str
        )
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
            "fingerprint": self._fingerprint(),
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
        logger.info("Checkpoint at step %d → %s", self.state["step"], self.checkpoint_dir)

    def _resume_if_possible(self) -> None:
        path = self.checkpoint_dir / CHECKPOINT_FILE
        if not path.exists():
            return
        payload = torch.load(path, weights_only=False)
        if payload["fingerprint"] != self._fingerprint():
            raise ValueError(
                f"{path} belongs to a run with other parameters, data or base model; "
                "delete that folder to start afresh, or restore the settings to resume it"
            )
        self.state = payload["state"]
        self._load_lora_state(payload["lora"])
        self.best_lora_state = payload["best_lora"]
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        random.setstate(payload["rng"]["python"])
        logger.info(
            "Resuming from %s at step %d/%d (epoch %d, best validation loss %.4f)",
            path, self.state["step"], self.total_steps, self.state["epoch"], self.state["best_val_loss"],
        )

    # ----------------------------------------------------------------- loops
    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16"
        )

    def _batch(self, indices: list[int], examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate([examples[i] for i in indices], self.causal_lm.config.pad_token_id or 0)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-weighted mean answer loss on the validation examples."""
        started = time.perf_counter()
        self.model.eval()
        order = sorted(range(len(self.validation_examples)), key=lambda i: len(self.validation_examples[i]["input_ids"]))
        size = self.params["eval_batch_size"]
        total, count = 0.0, 0
        for start in range(0, len(order), size):
            batch = self._batch(order[start : start + size], self.validation_examples)
            with self._autocast():
                loss_sum, n = answer_loss_sum(self.causal_lm, batch, self.params["head_chunk_tokens"])
            total, count = total + loss_sum.item(), count + n
        self.model.train()
        self.state["eval_s"] = self.state.get("eval_s", 0.0) + time.perf_counter() - started
        loss = total / max(count, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss is {loss} at step {self.state['step']}")
        return loss

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        lengths = [len(e["input_ids"]) for e in self.train_examples]
        p = self.params
        return length_grouped_batches(lengths, p["batch_size"], p["length_group_size"], p["seed"] + epoch)

    def _record_eval(self, train_loss: float | None) -> bool:
        """Validate, keep the best weights; return True when patience is exhausted."""
        p, s = self.params, self.state
        val_loss = self.evaluate()
        improved = val_loss < s["best_val_loss"] - p["early_stopping_min_delta"]
        if improved:
            s["best_val_loss"], s["best_step"], s["evals_without_improvement"] = val_loss, s["step"], 0
            self.best_lora_state = self._lora_state()
        else:
            s["evals_without_improvement"] += 1
        s["history"].append(
            {"step": s["step"], "epoch": s["epoch"], "train_loss": train_loss, "val_loss": val_loss,
             "lr": self.scheduler.get_last_lr()[0]}
        )
        logger.info(
            "step %d/%d epoch %d: train loss %s, validation loss %.4f%s",
            s["step"], self.total_steps, s["epoch"],
            "-" if train_loss is None else f"{train_loss:.4f}", val_loss,
            " (best, kept)" if improved else f" (no improvement {s['evals_without_improvement']}/{p['early_stopping_patience']})",
        )
        return s["evals_without_improvement"] >= p["early_stopping_patience"]

    def train(self) -> TrainResult:
        """Run (or finish) training; return the model holding the best LoRA weights."""
        p, s = self.params, self.state
        accumulation = p["gradient_accumulation_steps"]
        if s["step"] == 0 and not s["history"]:
            s["base_val_loss"] = self.evaluate()
            s["history"].append({"step": 0, "epoch": 0, "train_loss": None, "val_loss": s["base_val_loss"], "lr": 0.0})
            s["best_val_loss"], self.best_lora_state = s["base_val_loss"], self._lora_state()
            logger.info("Base model validation loss (before training): %.4f", s["base_val_loss"])
        self.model.train()
        started = time.perf_counter() - s["elapsed_s"]
        window_loss, window_tokens = 0.0, 0
        stop = s["step"] >= self.total_steps or s.get("stopped_early", False)
        bar = tqdm(total=self.total_steps, initial=s["step"], desc="train", unit="step", file=sys.stderr)
        while not stop and s["epoch"] < p["epochs"]:
            batches = self._epoch_batches(s["epoch"])
            groups = [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]
            for group_index in range(s["batch_in_epoch"] // accumulation, len(groups)):
                group = groups[group_index]
                tensors = [self._batch(indices, self.train_examples) for indices in group]
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
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [q for q in self.model.parameters() if q.requires_grad], p["max_grad_norm"]
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                s["step"] += 1
                s["batch_in_epoch"] = (group_index + 1) * accumulation
                s["supervised_tokens"] += n_supervised
                window_loss, window_tokens = window_loss + step_loss, window_tokens + n_supervised
                s["last_train_loss"] = step_loss / n_supervised
                s["elapsed_s"] = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{s['last_train_loss']:.3f}", grad=f"{float(grad_norm):.2f}")
                if s["step"] % p["eval_every_steps"] == 0 or s["step"] == self.total_steps:
                    s["window_train_loss"] = window_loss / window_tokens
                    window_loss, window_tokens = 0.0, 0
                    if self._record_eval(s["window_train_loss"]):
                        s["stopped_early"] = True
                        logger.info("Early stopping at step %d: best step %d", s["step"], s["best_step"])
                if s["step"] >= self.total_steps or s.get("stopped_early"):
                    stop = True
                if stop or s["step"] % p["checkpoint_every_steps"] == 0:
                    s["elapsed_s"] = time.perf_counter() - started
                    self.save_checkpoint()
                if stop:
                    break
            else:
                s["epoch"], s["batch_in_epoch"] = s["epoch"] + 1, 0
        bar.close()
        self._load_lora_state(self.best_lora_state)
        self.model.eval()
        return TrainResult(self.model, self._metrics(), s["history"])

    def _metrics(self) -> dict:
        s = self.state
        elapsed = max(s["elapsed_s"], 1e-9)
        training = max(s["elapsed_s"] - s.get("eval_s", 0.0), 1e-9)
        if self.device.type == "cuda":
            peak = {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
        else:
            peak = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        return {
            "base_val_loss": s["base_val_loss"],
            "best_val_loss": s["best_val_loss"],
            "best_step": s["best_step"],
            "train_loss": s.get("window_train_loss", s.get("last_train_loss")),
            "steps": s["step"],
            "total_steps_planned": self.total_steps,
            "epochs_completed": s["epoch"] + s["batch_in_epoch"] / max(self.batches_per_epoch, 1),
            "stopped_early": bool(s.get("stopped_early", False)),
            "duration_s": elapsed,
            "validation_s": s.get("eval_s", 0.0),
            "tokens_per_s": s["trained_tokens"] / training,  # training time only, validation excluded
            "supervised_tokens_per_s": s["supervised_tokens"] / training,
            "train_examples": len(self.train_examples),
            "validation_examples": len(self.validation_examples),
            "device": self.device.type,
            "compute_dtype": self.compute_dtype,
            "optimizer": type(self.optimizer).__name__,
            **peak,
        }

    def cleanup(self) -> None:
        """Remove the checkpoints of a finished run."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
