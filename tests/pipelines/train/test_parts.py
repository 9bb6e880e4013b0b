"""The recipe's parts on their own: the batch sampler and collator, checkpoint I/O, the
single-process collectives and the metrics report."""

from __future__ import annotations

import math

import pytest
import torch

from kaggle_qa.pipelines.train.checkpoint import CheckpointStore, run_fingerprint
from kaggle_qa.pipelines.train.config import TrainConfig
from kaggle_qa.pipelines.train.data import Collator, GroupedBatchSampler, length_grouped_batches, train_loader
from kaggle_qa.pipelines.train.distributed import Comm
from kaggle_qa.pipelines.train.report import run_metrics
from kaggle_qa.prompting import IGNORE_INDEX

LENGTHS = [((i * 37) % 200) + 10 for i in range(30)]
GROUPS = [f"c{i // 3}" for i in range(30)]


@pytest.mark.parametrize("grouping", ["length", "chunk"])
def test_two_ranks_see_exactly_the_rows_of_one_process_at_twice_the_batch(grouping):
    one = GroupedBatchSampler(LENGTHS, GROUPS, 8, grouping=grouping, group_size=2, seed=5)
    ranks = [GroupedBatchSampler(LENGTHS, GROUPS, 4, grouping=grouping, group_size=2, seed=5, rank=r, world_size=2)
             for r in range(2)]
    for epoch in range(2):
        for sampler in (one, *ranks):
            sampler.set_epoch(epoch)
        single, split = list(one), list(zip(*ranks))
        assert len(single) == len(split) == math.ceil(30 / 8)
        assert [a + b for a, b in split] == single  # same rows, same order, step by step
    assert list(one) != (one.set_epoch(0) or list(one))  # each epoch its own seeded order
    one.set_epoch(1, skip=2)
    assert len(one) == len(list(one)) == 2  # resume mid-epoch


def test_a_short_last_batch_leaves_a_rank_empty_handed_not_out_of_step():
    lengths = [10] * 9  # batch 4 × 2 ranks: 8 + 1 rows
    ranks = [GroupedBatchSampler(lengths, ["g"] * 9, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == 2
    assert sorted(len(b) for b in (batches[0][-1], batches[1][-1])) == [0, 1]
    collator = Collator(pad_token_id=0)
    assert collator([]) is None
    loaded = list(train_loader([{"input_ids": [1] * 10, "labels": [1] * 10}] * 9, ranks[1], collator))
    assert len(loaded) == 2


def test_single_process_sampler_is_the_recipes_old_order():
    sampler = GroupedBatchSampler(LENGTHS, GROUPS, 4, group_size=8, seed=3)
    sampler.set_epoch(2)
    assert list(sampler) == length_grouped_batches(LENGTHS, 4, 8, 3 + 2)


def test_collator_weights_only_the_label_word_and_pads_to_a_multiple():
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8], "label_position": 2},
            {"input_ids": [5, 6, 9], "labels": [IGNORE_INDEX, 6, 9], "label_position": -1}]
    batch = Collator(pad_token_id=0, multiple=8, label_weight=4.0)(rows)
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"].sum().item() == 7
    assert batch["loss_weights"][0].tolist() == [1, 1, 4, 1, 1, 1, 1, 1]
    assert batch["loss_weights"][1].eq(1).all()
    assert "loss_weights" not in Collator(pad_token_id=0, label_weight=1.0)(rows)


def test_checkpoints_are_atomic_and_refused_across_runs(tmp_path):
    examples = [[{"input_ids": [1, 2], "labels": [1, 2]}], []]
    fingerprint = run_fingerprint({"lr": 1}, {"name": "m"}, examples)
    store = CheckpointStore(tmp_path / "ck", fingerprint)
    assert store.load() is None
    store.save({"state": {"step": 3}})
    assert store.load()["state"] == {"step": 3}
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["checkpoint.pt"]  # no temporary file left
    for other in (run_fingerprint({"lr": 2}, {"name": "m"}, examples),
                  run_fingerprint({"lr": 1}, {"name": "m"}, [[{"input_ids": [2, 1], "labels": [1, 2]}], []]),
                  run_fingerprint({"lr": 1}, {"name": "m"}, examples, world_size=2)):
        with pytest.raises(ValueError, match="other parameters, data, base model or number of processes"):
            CheckpointStore(tmp_path / "ck", other).load()
    store.remove()
    assert not (tmp_path / "ck").exists()


def test_a_single_process_comm_changes_nothing():
    comm = Comm()
    assert not comm.distributed and comm.is_main
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    comm.sum_gradients([param])
    assert param.grad.tolist() == [2.0, 2.0, 2.0]
    assert comm.sum([1.5, 2]) == [1.5, 2] and comm.broadcast_object({"a": 1}) == {"a": 1}


def test_metrics_report_reads_the_state():
    state = {"elapsed_s": 10.0, "train_s": 8.0, "base_val_loss": 2.0, "best_val_loss": 1.5, "best_score": -1.5,
             "best_step": 4, "step": 6, "total_steps": 6, "examples_seen": 24, "trained_tokens": 800,
             "supervised_tokens": 80, "eval_s": 2.0, "window_train_loss": 1.2,
             "train_fit": {"loss": 1.0, "label_accuracy": 0.5, "top_label_share": 0.5, "examples": 4}}
    metrics = run_metrics(TrainConfig(), state, planned_steps=8, train_examples=[{}] * 8, validation_examples=[],
                          device=torch.device("cpu"), compute_dtype="float32", optimizer="AdamW")
    assert metrics["tokens_per_s"] == 100 and metrics["epochs_completed"] == 3 and metrics["budget_cut"]
    assert metrics["last_step_train_fit_loss"] == metrics["train_fit_loss"] == 1.0  # last step kept: same rows
    assert metrics["label_token_weight"] == 4.0 and metrics["num_processes"] == 1
