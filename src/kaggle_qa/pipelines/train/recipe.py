"""The (Q)LoRA fine-tuning recipe, torchtune style: this class wires the parts and runs the loop.

The parts, one job each:
- `config.TrainConfig`: the typed parameters (defaults = conf/base/parameters_train.yml).
- `data`: seeded length/chunk-grouped batch order, a rank-aware batch sampler for a `DataLoader`,
  right padding to a multiple, label-token loss weights.
- `loss`: answer-token loss with LM-head logits only at answer positions; label choices.
- `selection`: paired test of label accuracy on the same validation items, else answer loss.
- `budget`: the wall-clock planner (first plan, re-plans, hard stop).
- `checkpoint`: atomic checkpoints refused across runs (settings, data, base, world size).
- `report`: log lines, learning-curve history, metrics.
- `distributed`: the collectives (no-ops in one process).

Features
- Loss on answer tokens (and EOS) only; token-weighted across gradient accumulation and ranks.
- bf16 autocast where native, cosine schedule with warmup, grad-norm clipping, weight decay,
  paged AdamW 32-bit on CUDA (bitsandbytes), torch AdamW on CPU (logged).
- Validation every N optimizer steps; the best LoRA weights are kept (best-only adapter);
  early stopping after `early_stopping_patience` evaluations without improvement.
- Checkpoints every N steps in `checkpoint_dir`, so a run killed with kill -9 resumes from its
  last checkpoint; the directory is removed after success.
- Under torchrun (world size > 1): each rank trains on its slice of every global batch, the
  gradients and token counts are summed over ranks; validation, selection, the budget's
  re-planning, logging and checkpoints happen on rank 0 and its decisions are broadcast.

Errors
- `FloatingPointError` when a training or validation loss is NaN/inf.
- `ValueError` when a checkpoint in `checkpoint_dir` belongs to a run with other settings.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from kaggle_qa.modeling import keep_4bit_weights_trainable, load_model, model_identity, resolve_dtype

from .budget import BudgetPlanner, eval_every
from .checkpoint import CHECKPOINT_FILE, CheckpointStore, rng_state, run_fingerprint, set_rng_state
from .config import TrainConfig
from .data import OTHERS_SET, USER_SET, Collator, GroupedBatchSampler, chunk_grouped_batches, collate, length_grouped_batches, train_loader
from .distributed import Comm
from .dropout import speed_up_lora_dropout
from .fsdp import full_tensor, load_into, shard_with_fsdp2
from .loss import answer_loss_sum, body_hidden, label_choices, supervised_tokens
from .report import history_entry, log_validation, run_metrics
from .selection import Selector, initial_selection_state, label_summary, label_weights, paired_accuracy_z
from .strength import StrengthSetter, choose_strength

__all__ = [
    "CHECKPOINT_FILE", "LoRAFinetuneRecipe", "TrainResult", "answer_loss_sum", "body_hidden", "chunk_grouped_batches",
    "collate", "label_choices", "label_summary", "label_weights", "length_grouped_batches", "paired_accuracy_z",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run hands back: the model with its best LoRA weights loaded, and metrics
    (on ranks other than 0 of a distributed run: the model, no metrics)."""

    model: object
    metrics: dict
    history: list[dict] = field(default_factory=list)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int, completed_steps: int = 0):
    """The LR schedule over `total_steps`, advanced to `completed_steps` (used when the budget re-plans the run)."""
    from transformers import get_scheduler

    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", config.learning_rate)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    for _ in range(completed_steps):
        scheduler.step()
    return scheduler


class LoRAFinetuneRecipe:
    """(Q)LoRA fine-tuning of a causal LM on tokenized examples; see the module docstring."""

    def __init__(self, base_model: str, params: dict | TrainConfig, train_examples: list[dict],
                 validation_examples: list[dict], comm: Comm | None = None):
        self.base_model = base_model
        self.config = params if isinstance(params, TrainConfig) else TrainConfig.from_dict(params)
        self.train_examples = train_examples
        # examples tagged USER_SET (the selection part of the user's question file, contexts.py) are
        # measured beside the validation set at every validation pass, never trained on
        self.validation_examples = [e for e in validation_examples if e.get("set") not in (USER_SET, OTHERS_SET)]
        self.user_examples = [e for e in validation_examples if e.get("set") == USER_SET]
        # answers written by someone else (strength.py): only the adapter strength is chosen on them
        self.others_examples = [e for e in validation_examples if e.get("set") == OTHERS_SET]
        self.comm = comm or Comm()
        if torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            self.device = torch.device("cpu")
        self.compute_dtype = resolve_dtype(self.config.compute_dtype)
        self.selector = Selector(self.config.selection, self.config.early_stopping_min_delta,
                                 self.config.early_stopping_patience)

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Model ((Q)LoRA), optimizer, schedule, data order; resume if a checkpoint exists."""
        c, comm = self.config, self.comm
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        self._setup_model()
        comm.broadcast_parameters(self._trainable)  # every rank starts from rank 0's LoRA init
        if self.fsdp:
            shard_with_fsdp2(self.model, self.compute_dtype)
        self._setup_optimizer()
        if comm.rank:
            torch.manual_seed(c.seed + comm.rank)  # its own dropout masks
        self.batches_per_epoch = math.ceil(len(self.train_examples) / (c.batch_size * comm.world_size))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / c.gradient_accumulation_steps)
        self.planned_steps = self.steps_per_epoch * c.epochs
        if c.max_steps:
            self.planned_steps = min(self.planned_steps, c.max_steps)
        self.state = {
            "step": 0, "epoch": 0, "batch_in_epoch": 0, "total_steps": self.planned_steps,
            "eval_every": eval_every(c, self.planned_steps), "budget_planned": False,
            **initial_selection_state(), "history": [], "elapsed_s": 0.0, "train_s": 0.0, "eval_s": 0.0,
            "trained_tokens": 0, "supervised_tokens": 0, "examples_seen": 0,
        }
        tokens_per_step = sum(len(e["input_ids"]) for e in self.train_examples) / self.steps_per_epoch
        self.planner = BudgetPlanner(c, self.planned_steps, tokens_per_step)
        self.collator = Collator(self.causal_lm.config.pad_token_id or 0, c.pad_to_multiple_of, c.label_token_weight)
        self.sampler = GroupedBatchSampler(
            [len(e["input_ids"]) for e in self.train_examples],
            [e.get("group", str(i)) for i, e in enumerate(self.train_examples)],
            c.batch_size, grouping=c.batch_grouping, group_size=c.length_group_size, seed=c.seed,
            rank=comm.rank, world_size=comm.world_size,
        )
        self._make_scheduler(self.planned_steps)
        self.best_lora_state: dict[str, torch.Tensor] | None = None
        self.checkpoints = CheckpointStore(c.checkpoint_dir, self._fingerprint)
        self._resume_if_possible()

    @property
    def fsdp(self) -> bool:
        """FSDP2 (`train.distributed.strategy: fsdp`): the model is sharded over the ranks, so every
        forward (validation too) runs on all of them; gradients are reduced by FSDP."""
        return self.comm.distributed and self.config.distributed.strategy == "fsdp"

    @property
    def params(self) -> dict:
        """The settings as a plain dict (what the adapter records)."""
        return self.config.to_dict()

    @property
    def total_steps(self) -> int:
        return self.state["total_steps"]

    @property
    def checkpoint_dir(self):
        return self.checkpoints.folder

    def _make_scheduler(self, total_steps: int, completed_steps: int = 0) -> None:
        self.scheduler = make_scheduler(self.optimizer, self.config, total_steps, completed_steps)

    def _setup_model(self) -> None:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        c, lora = self.config, self.config.lora
        quantization = c.quantization
        if quantization:
            quantization = {**quantization, "compute_dtype": self.compute_dtype}
        # An unquantized base keeps fp32 weights and computes under bf16 autocast where bf16 is native:
        # measured 2.4x faster per training step on an AMX CPU than a bf16-weight model under autocast.
        weights_dtype = self.compute_dtype if quantization or self.device.type == "cuda" else "float32"
        device_map = {"": self.device} if quantization and self.device.type == "cuda" else None  # this rank's GPU
        model = load_model(self.base_model, dtype=weights_dtype, quantization=quantization, device_map=device_map)
        if not c.quantization:
            model.to(self.device)
        # bitsandbytes must never repack the 4-bit weights for CPU inference during training:
        # its packed kernel has no autograd (see modeling.keep_4bit_weights_trainable).
        keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=c.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if c.gradient_checkpointing and not c.quantization:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                            target_modules=lora.target_modules, task_type="CAUSAL_LM")
        self.model = get_peft_model(model, config)
        speed_up_lora_dropout(self.model)  # CPU: torch's bernoulli_ masks are a large part of a step (train/dropout.py)
        self.causal_lm = self.model.get_base_model()
        trainable, total = self.model.get_nb_trainable_parameters()
        if self.comm.is_main:
            logger.info(
                "LoRA r=%d alpha=%d on %s: %s trainable of %s parameters (%s, %s compute, 4-bit NF4 base=%s, "
                "grad checkpointing=%s, %d process%s)",
                lora.r, lora.alpha, lora.target_modules, f"{trainable:,}", f"{total:,}",
                self.device, self.compute_dtype, bool(c.quantization), c.gradient_checkpointing,
                self.comm.world_size, "" if self.comm.world_size == 1 else "es",
            )

    @property
    def _trainable(self) -> list[torch.nn.Parameter]:
        return [param for param in self.model.parameters() if param.requires_grad]

    def _setup_optimizer(self) -> None:
        c = self.config
        if c.optimizer == "paged_adamw_32bit" and self.device.type == "cuda":
            import bitsandbytes as bnb

            self.optimizer = bnb.optim.PagedAdamW32bit(self._trainable, lr=c.learning_rate, weight_decay=c.weight_decay)
            logger.info("Optimizer: bitsandbytes PagedAdamW32bit")
        else:
            self.optimizer = torch.optim.AdamW(self._trainable, lr=c.learning_rate, weight_decay=c.weight_decay)
            if self.comm.is_main:
                logger.info("Optimizer: torch AdamW (%s requested; paged optimizers need CUDA)", c.optimizer)

    # ------------------------------------------------------------ checkpoints
    @functools.cached_property
    def _fingerprint(self) -> str:
        return run_fingerprint(self.params, model_identity(self.base_model),
                               [self.train_examples, self.validation_examples], self.comm.world_size)

    def _lora_state(self) -> dict[str, torch.Tensor]:
        """The whole LoRA weights on CPU (under FSDP a collective: every rank calls it)."""
        return {name: full_tensor(param.detach()).to("cpu", copy=True)
                for name, param in self.model.named_parameters() if param.requires_grad}

    def _load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                load_into(params[name], value)

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly where we are, written atomically (rank 0 only)."""
        if not self.comm.is_main or self.fsdp:  # FSDP optimizer state is sharded: no resume (docs/train.md)
            return
        self.checkpoints.save({
            "state": self.state, "lora": self._lora_state(), "best_lora": self.best_lora_state,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
        })
        logger.debug("Checkpoint at step %d → %s", self.state["step"], self.checkpoint_dir)

    def _resume_if_possible(self) -> None:
        payload = self.checkpoints.load()
        if payload is None:
            return
        self.state = payload["state"]
        self._load_lora_state(payload["lora"])
        self.best_lora_state = payload["best_lora"]
        self._make_scheduler(self.state["total_steps"])  # before the optimizer state, which restores the current lr
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        if self.comm.rank:
            torch.manual_seed(self.config.seed + self.comm.rank + self.state["step"])
        if self.comm.is_main:
            logger.info("Resuming from %s at step %d/%d (epoch %d, best validation score %.4f)",
                        self.checkpoints.path, self.state["step"], self.total_steps, self.state["epoch"],
                        self.state["best_score"])

    # ----------------------------------------------------------------- loops
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16")

    def _batch(self, indices: list[int], examples: list[dict], weighted: bool = False) -> dict[str, torch.Tensor]:
        rows = [examples[i] for i in indices]
        batch = self.collator(rows) if weighted else collate(rows, self.collator.pad_token_id, self.collator.multiple)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def measure(self, examples: list[dict]) -> dict:
        """Answer loss (token-weighted mean) and label-choice accuracy of the current weights on `examples`."""
        keep_4bit_weights_trainable(self.model)  # the eval-mode forward below must not repack 4-bit weights
        self.model.eval()
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        size = self.config.eval_batch_size
        total, count, choices = 0.0, 0, []
        for start in range(0, len(order), size):
            indices = order[start : start + size]
            batch = self._batch(indices, examples)
            with self._autocast():
                hidden = body_hidden(self.causal_lm, batch)
                loss_sum, n = answer_loss_sum(self.causal_lm, batch, self.config.head_chunk_tokens, hidden)
                choices += label_choices(self.causal_lm, batch, hidden, [examples[i] for i in indices])
            total, count = total + loss_sum.item(), count + n
        self.model.train()
        return {"loss": total / max(count, 1), **label_summary(choices), "choices": choices}

    def evaluate(self) -> dict:
        """Validation loss, label accuracy and the selection score (higher is better)."""
        started = time.perf_counter()
        result = self.measure(self.validation_examples)
        if self.user_examples:
            result["user_selection_loss"] = self.measure(self.user_examples)["loss"]
        self.state["eval_s"] += time.perf_counter() - started
        if not math.isfinite(result["loss"]):
            raise FloatingPointError(f"validation loss is {result['loss']} at step {self.state['step']}")
        result["score"] = self.selector.score(result)
        return result

    def _validate_base(self) -> None:
        s = self.state
        base = self.evaluate()
        s["base_val_loss"], s["base_val_label_accuracy"] = base["loss"], base["label_accuracy"]
        s["base_val_top_label_share"] = base["top_label_share"]
        s["history"].append(history_entry(s, base, None, 0.0))
        self.selector.keep(base, s)  # the base model is step 0 of the selection
        self.best_lora_state = self._lora_state()
        self.selector.note_accuracy(base, s)
        logger.info("Base model before training: validation loss %.4f, label accuracy %s", base["loss"],
                    base["label_accuracy"])

    def _record_eval(self, train_loss: float | None) -> bool:
        """Validate, keep the best weights; return True when patience is exhausted."""
        s = self.state
        result = self.evaluate()
        improved, exhausted = self.selector.judge(result, s)
        if improved:
            self.best_lora_state = self._lora_state()
        s["history"].append(history_entry(s, result, train_loss, self.scheduler.get_last_lr()[0]))
        log_validation(s, result, train_loss, improved, self.config.early_stopping_patience)
        return exhausted

    def _train_step(self, group: list[dict | None]) -> tuple[float, int, float]:
        """One optimizer step over `group` (this rank's batches of the step); returns the step's
        loss sum, supervised tokens and gradient norm, summed over ranks."""
        c, s, comm = self.config, self.state, self.comm
        tensors = [None if b is None else {k: v.to(self.device) for k, v in b.items()} for b in group]
        n_supervised = sum(supervised_tokens(b) for b in tensors if b is not None)
        if comm.distributed:
            n_supervised = int(comm.sum([n_supervised])[0])
        step_loss, tokens, rows = 0.0, 0, 0
        for batch in tensors:
            if batch is None:  # this rank's share of a short last batch is empty
                continue
            with self._autocast():
                loss_sum, _ = answer_loss_sum(self.causal_lm, batch, c.head_chunk_tokens)
            if not torch.isfinite(loss_sum):
                raise FloatingPointError(
                    f"training loss is {loss_sum.item()} at step {s['step'] + 1} (epoch {s['epoch']}): "
                    f"lower learning_rate (now {c.learning_rate}) or check the data; "
                    f"the last good checkpoint is in {self.checkpoint_dir}"
                )
            # FSDP averages gradients over ranks, the DDP path sums them: the same global mean either way
            (loss_sum * (comm.world_size if self.fsdp else 1) / n_supervised).backward()
            step_loss += loss_sum.item()
            tokens += int(batch["attention_mask"].sum())
            rows += int(batch["input_ids"].shape[0])
        if not self.fsdp:
            comm.sum_gradients(self._trainable)
        if comm.distributed:
            step_loss, tokens, rows = comm.sum([step_loss, tokens, rows])
        grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(self._trainable, c.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        s["trained_tokens"] += int(tokens)
        s["examples_seen"] += int(rows)
        return step_loss, n_supervised, float(grad_norm)

    def _share_decisions(self) -> None:
        """Rank 0's state (validation results, selection, budget plan, stop) on every rank."""
        if not self.comm.distributed:
            return
        before = self.state["total_steps"]
        self.state = self.comm.broadcast_object(self.state)
        if self.state["total_steps"] != before and not self.comm.is_main:
            self._make_scheduler(self.state["total_steps"], completed_steps=self.state["step"])

    def train(self) -> TrainResult:
        """Run (or finish) training; return the model holding the best LoRA weights."""
        c, comm = self.config, self.comm
        accumulation = c.gradient_accumulation_steps
        run_started = time.perf_counter() - self.state["elapsed_s"]
        if self.state["step"] == 0 and not self.state["history"]:
            if comm.is_main or self.fsdp:
                self._validate_base()
            self._share_decisions()
        keep_4bit_weights_trainable(self.model)
        self.model.train()
        window_loss, window_tokens = 0.0, 0
        s = self.state
        stop = s["step"] >= self.total_steps or s.get("stopped_early", False)
        bar = tqdm(total=self.total_steps, initial=s["step"], desc="train", unit="step", file=sys.stderr,
                   disable=not comm.is_main)
        loader = train_loader(self.train_examples, self.sampler, self.collator)
        while not stop and s["epoch"] < c.epochs:
            first_group = s["batch_in_epoch"] // accumulation
            self.sampler.set_epoch(s["epoch"], skip=first_group * accumulation)
            n_batches = len(self.sampler.global_batches())
            group, group_index = [], first_group
            for batch in loader:
                group.append(batch)
                if len(group) < accumulation and group_index * accumulation + len(group) < n_batches:
                    continue  # the last step of an epoch may have fewer batches
                step_started = time.perf_counter()
                step_loss, n_supervised, grad_norm = self._train_step(group)
                group = []
                s = self.state
                s["train_s"] += time.perf_counter() - step_started
                s["step"] += 1
                group_index += 1
                s["batch_in_epoch"] = group_index * accumulation
                s["supervised_tokens"] += n_supervised
                window_loss, window_tokens = window_loss + step_loss, window_tokens + n_supervised
                s["last_train_loss"] = step_loss / n_supervised
                s["elapsed_s"] = time.perf_counter() - run_started
                if self._after_step(bar, grad_norm, run_started, window_loss, window_tokens):
                    window_loss, window_tokens = 0.0, 0
                s = self.state
                if s["step"] >= self.total_steps or s.get("stopped_early"):
                    stop = True
                if stop or s["step"] % c.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if stop:
                    break
            else:
                s["epoch"], s["batch_in_epoch"] = s["epoch"] + 1, 0
        bar.close()
        if not comm.is_main and not self.fsdp:
            return TrainResult(self.model, {}, [])
        fit_rows = self._training_fit_sample()
        if s["best_step"] != s["step"]:  # the last weights too: underfitting vs. an early pick by selection
            self._measure_training_fit("train_fit_last", fit_rows)
        self._load_lora_state(self.best_lora_state)
        self._measure_training_fit("train_fit", fit_rows)
        self._choose_strength()
        self.model.eval()
        if not comm.is_main:
            return TrainResult(self.model, {}, [])
        return TrainResult(self.model, self._metrics(), s["history"])

    def _after_step(self, bar, grad_norm: float, run_started: float, window_loss: float, window_tokens: int) -> bool:
        """The decisions after an optimizer step, taken on rank 0 and broadcast: the budget plan,
        the hard stop, then (when due) validation, selection, early stopping and the budget's
        re-plan. Under FSDP every rank runs the validation (the model is sharded); rank 0's state
        still decides. True when a validation closed the train-loss window."""
        c, comm = self.config, self.comm
        s = self.state
        if comm.is_main:
            if self.planner.first_plan(s):
                self._make_scheduler(s["total_steps"], completed_steps=s["step"])
            bar.total = self.total_steps
            bar.update(1)
            bar.set_postfix(loss=f"{s['last_train_loss']:.3f}", grad=f"{grad_norm:.2f}")
            if self.planner.budget and self.planner.over_budget(s) and s["step"] < self.total_steps:
                logger.warning("Time budget exceeded at step %d of %d: stopping here", s["step"], self.total_steps)
                s["budget_cut_at_step"] = s["step"]
                s["total_steps"] = s["step"]
        self._share_decisions()
        s = self.state
        if not (s["step"] % s["eval_every"] == 0 or s["step"] >= self.total_steps):
            return False
        s["window_train_loss"] = window_loss / window_tokens
        if comm.is_main or self.fsdp:
            if self._record_eval(s["window_train_loss"]):
                s["stopped_early"] = True
                if comm.is_main:
                    logger.info("Early stopping at step %d: best step %d", s["step"], s["best_step"])
        if comm.is_main:
            s["elapsed_s"] = time.perf_counter() - run_started
            if self.planner.replan(s):
                self._make_scheduler(s["total_steps"], completed_steps=s["step"])
        self._share_decisions()
        return True

    def _training_fit_sample(self) -> list[dict]:
        """A seeded sample of the training rows (`train_fit_examples` labelled ones, a quarter as many
        others) on which the fit of the kept and of the last weights is measured."""
        n = self.config.train_fit_examples
        if not n:
            return []
        labelled = [e for e in self.train_examples if e.get("label_position", -1) > 0]
        others = [e for e in self.train_examples if e.get("label_position", -1) <= 0]
        rng = random.Random(self.config.seed)
        return rng.sample(labelled, min(n, len(labelled))) + rng.sample(others, min(n // 4, len(others)))

    def _measure_training_fit(self, key: str, rows: list[dict]) -> None:
        """Label accuracy and loss of the weights now loaded on `rows` (training rows), recorded
        under `key`: is it fitting at all? One teacher-forced pass (:meth:`measure`: eval mode, no
        generation, batches of `eval_batch_size` sorted by length, the LM head at answer and label
        positions only), after the training loop and outside `time_budget_s`; its wall time is logged."""
        if rows:
            started = time.perf_counter()
            fit = self.measure(rows)
            logger.info("Training-row fit of the %s weights (%s) on %d rows: %.1f s, loss %.4f",
                        "last" if key == "train_fit_last" else "kept", key, len(rows), time.perf_counter() - started,
                        fit["loss"])
            self.state[key] = {"loss": fit["loss"], "label_accuracy": fit["label_accuracy"],
                               "top_label_share": fit["top_label_share"], "examples": len(rows)}

    def _choose_strength(self) -> None:
        """Scale the kept adapter to the strength with the lowest loss on answers written by someone else
        (strength.py), record it in the adapter's config, and measure the validation set at that strength."""
        c, s = self.config.strength, self.state
        started = time.perf_counter()
        setter = StrengthSetter(self.model)
        result = choose_strength(self.measure, setter, self.others_examples + self.user_examples, list(c.grid),
                                 c.fallback)
        if result["chosen"] != 1.0:
            kept = self.measure(self.validation_examples)
            result["validation_loss"], result["validation_label_accuracy"] = kept["loss"], kept["label_accuracy"]
        else:
            result["validation_loss"] = s["best_val_loss"]
            result["validation_label_accuracy"] = s.get("best_val_label_accuracy")
        setter.record()
        result["seconds"] = round(time.perf_counter() - started, 1)
        s["strength"] = result
        logger.info("Adapter strength %.3f (%s): validation loss %.4f (%.4f at strength 1), in %.0f s",
                    result["chosen"], result["chosen_by"], result["validation_loss"], s["best_val_loss"],
                    result["seconds"])

    def _metrics(self) -> dict:
        return run_metrics(self.config, self.state, planned_steps=self.planned_steps,
                           train_examples=self.train_examples, validation_examples=self.validation_examples,
                           device=self.device, compute_dtype=self.compute_dtype,
                           optimizer=type(self.optimizer).__name__, world_size=self.comm.world_size)

    def cleanup(self) -> None:
        """Remove the checkpoints of a finished run."""
        if self.comm.is_main:
            self.checkpoints.remove()
