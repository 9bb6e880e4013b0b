"""Batching: seeded length- or chunk-grouped batch order, a rank-aware batch sampler for a torch
`DataLoader`, and the right-padding collator (with label-token loss weights)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from kaggle_qa.prompting import IGNORE_INDEX

# The `set` tag of examples measured beside validation but never trained on or selected by: the
# selection part of the user's question file (contexts.user_selection_examples).
USER_SET = "user_selection"
# Answers written by someone else (a chunk-disjoint part of qa_cross_teacher) on which, like the user's
# selection part, the adapter strength is chosen after training (strength.py); never trained on.
OTHERS_SET = "others_selection"


def length_grouped_batches(lengths: list[int], batch_size: int, group_size: int, seed: int) -> list[list[int]]:
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


class GroupedBatchSampler(Sampler[list[int]]):
    """The epoch's batches for one rank, as `DistributedSampler` shards a dataset.

    The global batch order is the single-process order at batch `batch_size × world_size`
    (seeded by `seed + epoch`, `set_epoch` as with `DistributedSampler`); each global batch is cut
    into `world_size` slices and rank r takes slice r. So 2 ranks × batch b see exactly the rows
    1 process × batch 2b sees in each step. A short last batch gives a rank fewer rows, possibly
    none (an empty list: that rank contributes no gradient to the step). `skip` drops the first
    batches of the epoch (resume mid-epoch)."""

    def __init__(self, lengths: list[int], groups: list[str], batch_size: int, *, grouping: str = "length",
                 group_size: int = 8, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths, self.groups = lengths, groups
        self.batch_size, self.grouping, self.group_size = batch_size, grouping, group_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def global_batches(self) -> list[list[int]]:
        size = self.batch_size * self.world_size
        if self.grouping == "chunk":
            return chunk_grouped_batches(self.groups, self.lengths, size, self.seed + self.epoch)
        return length_grouped_batches(self.lengths, size, self.group_size, self.seed + self.epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.skip :]:
            share = -(-len(batch) // self.world_size)
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return max(len(self.global_batches()) - self.skip, 0)


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


class Collator:
    """`collate`, plus per-token loss weights (`label_token_weight` on the label word of labelled
    answers) when `label_weight` is not 1. An empty batch (a rank's share of a short last batch)
    collates to None."""

    def __init__(self, pad_token_id: int, multiple: int = 1, label_weight: float = 1.0):
        self.pad_token_id, self.multiple, self.label_weight = pad_token_id, multiple, label_weight

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor] | None:
        if not rows:
            return None
        batch = collate(rows, self.pad_token_id, self.multiple)
        if self.label_weight != 1.0:
            weights = torch.ones_like(batch["labels"], dtype=torch.float32)
            for row, example in enumerate(rows):
                if example.get("label_position", -1) > 0:
                    weights[row, example["label_position"]] = self.label_weight
            batch["loss_weights"] = weights
        return batch


def train_loader(examples: list[dict], sampler: GroupedBatchSampler, collator: Collator) -> DataLoader:
    """The training `DataLoader` (no worker processes: the rows are already tokenized). Its own
    generator: a DataLoader otherwise draws its base seed from the global torch RNG, which would
    shift the LoRA dropout masks of the run."""
    return DataLoader(examples, batch_sampler=sampler, collate_fn=collator, num_workers=0,
                      generator=torch.Generator().manual_seed(sampler.seed))
