"""The answer loss with logits only where labels are set, and the label choice read off the same
hidden states.

Kept rather than torchtune's `CEWithChunkedOutputLoss` or a plain `F.cross_entropy` over the full
head: those compute the 262k-token LM head at every position, prompt included, while this computes
it only at the answer tokens (the head is most of the compute of a small Gemma, ../shared/FACTS.md),
chunked with activation checkpointing so long answers never hold all fp32 logits at once.
tests/pipelines/train/test_train.py proves it equals the full-logits loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kaggle_qa.modeling import head_logits
from kaggle_qa.prompting import IGNORE_INDEX


def _head_loss_sum(head, softcap, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    losses = F.cross_entropy(head_logits(head, softcap, hidden), targets, reduction="none")
    return (losses * weights).sum()


def body_hidden(causal_lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the transformer body (no LM head) for a right-padded batch."""
    return causal_lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state


def supervised_tokens(batch: dict[str, torch.Tensor]) -> int:
    """How many next-token targets of the batch carry loss."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


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
