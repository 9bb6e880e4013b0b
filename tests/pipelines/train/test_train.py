"""Train pipeline: masking check, batching, best-only/early stopping, NaN, resume after kill -9,
the pipeline and the sweep on a tiny random Gemma 3, and two real QLoRA steps on Gemma 3 270M."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset

from kaggle_qa.datasets import FolderDataset
from kaggle_qa.datasets.train import SweepTableDataset
from kaggle_qa.modeling import load_tokenizer, model_identity
from kaggle_qa.pipelines.train.nodes import (
    LossMaskingError,
    build_examples,
    check_loss_masking,
    merge_params,
    split_training_data,
    train_adapter,
)
from kaggle_qa.pipelines.train.pipeline import create_pipeline, create_sweep_pipeline
from kaggle_qa.modeling import resolve_dtype
from kaggle_qa.pipelines.train.budget import BudgetPlanner
from kaggle_qa.pipelines.train.checkpoint import CHECKPOINT_FILE
from kaggle_qa.pipelines.train.config import SelectionConfig, TrainConfig
from kaggle_qa.pipelines.train.data import chunk_grouped_batches, length_grouped_batches
from kaggle_qa.pipelines.train.recipe import make_scheduler
from kaggle_qa.pipelines.train.selection import (
    Selector,
    initial_selection_state,
    label_summary,
    paired_accuracy_z,
)
from kaggle_qa.prompting import IGNORE_INDEX, PROMPT_TEMPLATE_VERSION

PROJECT_ROOT = Path(__file__).resolve().parents[3]

CONTEXT = "Kaggle Notebooks run in the browser. A session stops after 12 hours of execution time."
BASE_ROWS = [
    {"input": CONTEXT, "instruction": "True or False: a notebook session can run for 12 hours.",
     "output": "True.", "task_type": "true_false"},
    {"input": CONTEXT, "instruction": "Do Kaggle Notebooks run in the browser?",
     "output": "Yes, they run in the browser.", "task_type": "yes_no"},
    {"input": CONTEXT, "instruction": "How long can a session run?",
     "output": "Up to 12 hours of execution time.", "task_type": "extractive_qa"},
    {"input": CONTEXT, "instruction": "Premise: sessions stop after 12 hours. Hypothesis: sessions never stop. "
     "Does the premise entail the hypothesis?", "output": "No, it contradicts it.", "task_type": "nli"},
]
# three chunks of four rows (the split keeps each chunk on one side)
ROWS = [dict(row, chunk_id=f"chunk-{n}") for n in range(3) for row in BASE_ROWS]


def tiny_params(tmp_path: Path, **overrides) -> dict:
    """CPU-fast parameters for the tiny model (full-precision LoRA unless quantization is given)."""
    params = {
        "seed": 0, "max_length": 96, "max_train_examples": None, "require_context": True,
        "split": {"validation_share": 0.34, "validation_max_rows": 4, "test_share": 0.0, "seed": 0},
        "compute_dtype": "float32", "quantization": None, "gradient_checkpointing": False,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "bias": "none", "target_modules": "all-linear"},
        "optimizer": "paged_adamw_32bit", "learning_rate": 3e-2, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
        "max_grad_norm": 1.0, "weight_decay": 0.01, "batch_size": 2, "gradient_accumulation_steps": 2,
        "length_group_size": 2, "epochs": 3, "max_steps": None, "eval_every_steps": 1, "eval_batch_size": 4,
        "evaluations_per_run": 4, "time_budget_s": None, "budget_calibration_steps": 2, "budget_hard_stop": 1.15,
        "label_token_weight": 1.0,
        "selection": {"use_label_accuracy": False, "loss_weight": 1.0, "balanced": True, "noise_z": 2.0},
        "train_fit_examples": 8,
        "early_stopping_patience": 100, "early_stopping_min_delta": 0.0, "checkpoint_every_steps": 1,
        "checkpoint_dir": str(tmp_path / "checkpoints"), "head_chunk_tokens": 1024,
        # what the recipe's code defaulted to before its typed config took conf/base's values
        "pad_to_multiple_of": 1, "batch_grouping": "length", "max_validation_share": 1.0,
        "budget_replan_tolerance": 0.03,
    }
    return merge_params(params, overrides)


def lora_b_weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n]


def test_length_grouped_batches_cover_every_example_once_with_little_padding():
    lengths = [((i * 37) % 200) + 10 for i in range(64)]
    batches = length_grouped_batches(lengths, batch_size=4, group_size=8, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(64))
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    random_order = [list(range(64))[i : i + 4] for i in range(0, 64, 4)]
    random_padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in random_order)
    assert padding < random_padding / 3
    assert batches == length_grouped_batches(lengths, batch_size=4, group_size=8, seed=1)


def test_chunk_grouped_batches_keep_a_chunks_rows_together():
    groups = [f"c{i // 4}" for i in range(64)]  # 16 chunks of 4 rows
    lengths = [100 + (i // 4) * 7 + i % 4 for i in range(64)]
    batches = chunk_grouped_batches(groups, lengths, batch_size=4, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(64))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)  # chunks of batch size: one chunk per batch
    batches = chunk_grouped_batches(groups, lengths, batch_size=8, seed=3)
    assert all(len({groups[i] for i in b}) == 2 for b in batches)
    assert batches != chunk_grouped_batches(groups, lengths, batch_size=8, seed=4)  # the seed shuffles chunks
    shuffled = length_grouped_batches(lengths, batch_size=4, group_size=8, seed=3)
    assert sum(len({groups[i] for i in b}) for b in shuffled) > 16  # (what length grouping does instead)


def split_and_build(model_path: str, params: dict, rows: list[dict] = ROWS):
    train_rows, validation_rows, _, _ = split_training_data(rows, params)
    train, validation, _ = build_examples(train_rows, validation_rows, model_path, params)
    return train, validation


def run_train(train, validation, model_path, params):
    return train_adapter(train, validation, {}, {}, model_path, params)


def test_masking_check_accepts_answer_plus_eos_and_rejects_wrong_masks(tiny_gemma_path, tmp_path):
    tokenizer = load_tokenizer(tiny_gemma_path)
    train, _, _ = build_examples(ROWS, ROWS, tiny_gemma_path, tiny_params(tmp_path))
    report = check_loss_masking(tokenizer, ROWS, train)
    assert set(report) == {"true_false", "yes_no", "extractive_qa", "nli"}
    assert report["true_false"]["trained_text"] == "True." + tokenizer.eos_token

    no_eos = [dict(e, labels=e["labels"][:-1] + [IGNORE_INDEX]) for e in train]
    with pytest.raises(LossMaskingError, match="row 0 \\(true_false\\)"):
        check_loss_masking(tokenizer, ROWS, no_eos)
    prompt_trained = [dict(e, labels=[e["input_ids"][0], *e["labels"][1:]]) for e in train]
    with pytest.raises(LossMaskingError, match="prompt tokens"):
        check_loss_masking(tokenizer, ROWS, prompt_trained)
    nothing_trained = [dict(e, labels=[IGNORE_INDEX] * len(e["labels"])) for e in train]
    with pytest.raises(LossMaskingError, match="no token carries loss"):
        check_loss_masking(tokenizer, ROWS, nothing_trained)


def test_padding_to_a_multiple_changes_the_shape_not_the_loss(tiny_gemma_path, tmp_path):
    """Batch widths rounded up to `pad_to_multiple_of` (few distinct shapes on CPU): the padding is
    masked out of attention and loss, so the answer loss is the same."""
    from kaggle_qa.modeling import load_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    examples, _, _ = build_examples(ROWS[:4], ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    model = load_model(tiny_gemma_path, dtype="float32")
    tight, padded = collate(examples, pad_token_id=0), collate(examples, pad_token_id=0, multiple=32)
    width = max(len(e["input_ids"]) for e in examples)
    assert tight["input_ids"].shape[1] == width and padded["input_ids"].shape[1] % 32 == 0
    assert padded["input_ids"].shape[1] > width
    with torch.no_grad():
        (a, n), (b, m) = (answer_loss_sum(model, batch, head_chunk_tokens=64) for batch in (tight, padded))
    assert n == m and torch.allclose(a, b, rtol=1e-5)


def test_label_position_loss_equals_the_full_logits_loss(tiny_gemma_path, tmp_path):
    """Logits only at label positions give exactly the loss of the full head over every position,
    and label-token weights weight exactly the label word's loss."""
    from kaggle_qa.modeling import load_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    examples, _, _ = build_examples(ROWS[:4], ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    model = load_model(tiny_gemma_path, dtype="float32")
    batch = collate(examples, pad_token_id=0)
    with torch.no_grad():
        loss_sum, count = answer_loss_sum(model, batch, head_chunk_tokens=7)  # several chunks
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        token_losses = torch.nn.functional.cross_entropy(
            full.logits[:, :-1].transpose(1, 2).float(), batch["labels"][:, 1:], reduction="none"
        )
        weights = torch.ones_like(batch["labels"], dtype=torch.float32)
        labelled = [(row, e["label_position"]) for row, e in enumerate(examples) if e["label_position"] > 0]
        assert [examples[row]["task_type"] for row, _ in labelled] == ["true_false", "yes_no"]
        for row, position in labelled:
            weights[row, position] = 5.0
        weighted, weighted_count = answer_loss_sum(model, {**batch, "loss_weights": weights}, head_chunk_tokens=7)
    assert count == sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    assert loss_sum.item() / count == pytest.approx(full.loss.item(), rel=1e-5)
    label_losses = sum(token_losses[row, position - 1].item() for row, position in labelled)
    assert weighted_count == count
    assert weighted.item() == pytest.approx(loss_sum.item() + 4.0 * label_losses, rel=1e-5)


def test_label_choice_is_the_candidate_with_the_highest_logit(tiny_gemma_path, tmp_path):
    """The validation label decision compares exactly the first tokens of "True"/"False" (or "Yes"/"No")."""
    from kaggle_qa.modeling import load_model
    from kaggle_qa.pipelines.train.recipe import body_hidden, collate, label_choices

    tokenizer = load_tokenizer(tiny_gemma_path)
    examples, _, _ = build_examples(ROWS[:4], ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    true_false, yes_no = examples[0], examples[1]
    assert true_false["label_candidates"] == [tokenizer("True", add_special_tokens=False)["input_ids"][0],
                                              tokenizer("False", add_special_tokens=False)["input_ids"][0]]
    assert true_false["input_ids"][true_false["label_position"]] == tokenizer("True.", add_special_tokens=False)["input_ids"][0]
    assert yes_no["input_ids"][yes_no["label_position"]] == yes_no["label_candidates"][0]
    assert examples[2]["label_position"] == -1 and examples[3]["label_position"] == -1
    model = load_model(tiny_gemma_path, dtype="float32")
    batch = collate(examples, pad_token_id=0)
    with torch.no_grad():
        hidden = body_hidden(model, batch)
        choices = label_choices(model, batch, hidden, examples)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = []
    for row in (0, 1):
        e = examples[row]
        scores = logits[row, e["label_position"] - 1, e["label_candidates"]]
        expected.append((e["label_candidates"][int(scores.argmax())], e["input_ids"][e["label_position"]]))
    assert choices == expected
    summary = label_summary([(1, 1), (1, 2), (1, 1), (3, 3)])
    # gold 1: 2/2 right, gold 2: 0/1, gold 3: 1/1 -> balanced (1 + 0 + 1) / 3
    assert summary == {"label_accuracy": 0.75, "label_balanced_accuracy": 2 / 3, "label_examples": 4,
                       "top_label_share": 0.75}


def test_selection_prefers_a_balanced_checkpoint_over_one_that_always_answers_false(tmp_path):
    """7 false + 3 true validation items: always "False" is 0.70 accurate, but balanced 0.50; a
    checkpoint that reads (0.60 accurate, both labels) must win at equal loss."""
    FALSE, TRUE = 5, 6
    always_false = label_summary([(FALSE, FALSE)] * 7 + [(FALSE, TRUE)] * 3)
    reads = label_summary([(FALSE, FALSE)] * 4 + [(TRUE, FALSE)] * 3 + [(TRUE, TRUE)] * 2 + [(FALSE, TRUE)])
    assert always_false["label_accuracy"] > reads["label_accuracy"]
    selector = Selector(SelectionConfig(use_label_accuracy=True, loss_weight=0.25, balanced=True))
    assert selector.score({"loss": 0.5, **reads}) > selector.score({"loss": 0.5, **always_false})
    plain = Selector(SelectionConfig(use_label_accuracy=True, loss_weight=0.25, balanced=False))
    assert plain.score({"loss": 0.5, **reads}) < plain.score({"loss": 0.5, **always_false})  # picks the one-label one


def test_selection_lets_the_loss_decide_within_chance_and_accuracy_beyond_it():
    """The run that motivated the rule (27 labelled validation rows, decision not learned): a chance
    0.555 at step 23 must not beat later checkpoints of lower loss whose accuracy is within chance
    of it, nor stop training early; a real jump in accuracy still wins over a lower loss."""
    import math

    selector = Selector(SelectionConfig(use_label_accuracy=True, loss_weight=0.25, balanced=True, noise_z=2.0))
    state = {**initial_selection_state(), "step": 0}
    history = [(0, 0.599, 0.290), (23, 0.084, 0.555), (46, 0.068, 0.339), (69, 0.057, 0.417),
               (92, 0.063, 0.502), (115, 0.042, 0.534), (138, 0.040, 0.540)]
    kept = []
    for step, loss, accuracy in history:
        result = {"loss": loss, "label_balanced_accuracy": accuracy, "label_accuracy": accuracy,
                  "label_examples": 27, "top_label_share": 0.5}
        result["score"] = selector.score(result)
        state["step"] = step
        if step == 0 or selector.improves(result, state):
            selector.keep(result, state)
            kept.append(step)
        else:
            state["evals_without_improvement"] += 1
        selector.note_accuracy(result, state)
    # without per-item choices nothing is beyond chance: the loss decides (92: higher loss than 69's)
    assert kept == [0, 23, 46, 69, 115, 138]
    assert state["evals_without_improvement"] == 0
    # the old plain score would have kept step 23 (0.555 - 0.25 x 0.084 beats 0.540 - 0.25 x 0.040)
    assert 0.555 - 0.25 * 0.084 > 0.540 - 0.25 * 0.040


def test_paired_selection_sees_a_real_gain_that_the_unpaired_margin_calls_chance():
    """The published-v3 run that motivated the paired test: 44 labelled validation rows (22 "True",
    22 "False"), the best pass so far right on 34; a later pass gains 8 of its 10 misses and loses 1
    (41/44) at a higher answer loss. The unpaired margin (0.21 at z = 2) calls +0.16 chance, so the
    loss kept the old pass; on the same items 8 gained against 1 lost is z = 7/3 = 2.33, beyond
    chance. The same 41/44 reached by disagreeing on more items (10 gained, 3 lost: z = 1.94) stays
    within chance, and the loss decides."""
    import math

    TRUE, FALSE = 6, 5
    golds = [TRUE] * 22 + [FALSE] * 22
    wrong = {0, 1, 2, 3, 4, 22, 23, 24, 25, 26}  # the reference pass misses 10

    def answers(right: set[int]) -> list[tuple[int, int]]:
        return [(g if i in right else (FALSE if g == TRUE else TRUE), g) for i, g in enumerate(golds)]

    reference = answers(set(range(44)) - wrong)
    gained_8_lost_1 = answers(((set(range(44)) - wrong) | set(sorted(wrong)[:8])) - {10})
    gained_10_lost_3 = answers(set(range(44)) - {10, 11, 30})
    assert label_summary(gained_8_lost_1)["label_accuracy"] == label_summary(gained_10_lost_3)["label_accuracy"] == 41 / 44
    assert paired_accuracy_z(gained_8_lost_1, reference) == pytest.approx(7 / 3)
    assert paired_accuracy_z(gained_10_lost_3, reference) == pytest.approx(7 / math.sqrt(13))
    assert paired_accuracy_z(reference, gained_8_lost_1) == pytest.approx(-7 / 3)
    assert paired_accuracy_z(reference, reference) == 0.0
    with pytest.raises(ValueError, match="same items"):
        paired_accuracy_z(reference[:-1], reference[1:])
    # balanced weights: the one "True" item among 4 weighs 1/2, each "False" item 1/6; gaining the
    # "True" item and losing a "False" one is +1/3 balanced (z = (1/3) / sqrt(1/4 + 1/36)), 0 plain
    always_false = [(FALSE, TRUE), (FALSE, FALSE), (FALSE, FALSE), (FALSE, FALSE)]
    reads = [(TRUE, TRUE), (TRUE, FALSE), (FALSE, FALSE), (FALSE, FALSE)]
    assert paired_accuracy_z(reads, always_false, balanced=True) == pytest.approx(2 / math.sqrt(10))
    assert paired_accuracy_z(reads, always_false, balanced=False) == 0.0

    selector = Selector(SelectionConfig(use_label_accuracy=True, loss_weight=0.25, balanced=True, noise_z=2.0))
    kept = {"loss": 1.22, "choices": reference, **label_summary(reference)}
    state = {"best_val_loss": kept["loss"], "best_score": 0.0}
    selector.note_accuracy(kept, state)
    assert state["top_val_choices"] == reference
    for choices, wins in ((gained_8_lost_1, True), (gained_10_lost_3, False)):
        candidate = {"loss": 1.31, "choices": choices, "score": 0.0, **label_summary(choices)}
        assert selector.improves(candidate, state) is wins
        assert candidate["paired_z"] == pytest.approx(paired_accuracy_z(choices, reference))  # logged, in the history
        # without per-item choices there is no test of chance (no unpaired fallback): the higher loss loses
        assert not selector.improves({k: v for k, v in candidate.items() if k != "choices"}, state)
    assert selector.improves({"loss": 1.10, "choices": gained_10_lost_3, "score": 0.0, **label_summary(gained_10_lost_3)},
                             state)
    # beyond chance the other way: worse, whatever the loss
    half_lost = answers(set(range(5, 22)))  # 17 of the 34 items the reference got right, nothing gained
    assert not selector.improves({"loss": 0.5, "choices": half_lost, "score": 0.0, **label_summary(half_lost)}, state)


class MidRun:
    """A run with an 840 s budget, 198 steps allowed by its epochs, planned for `total_steps` and
    `step` steps into its run at `seconds_per_step`: the budget planner, a real optimizer and the
    recipe's LR schedule (no model)."""

    def __init__(self, tmp_path, total_steps, step, seconds_per_step, eval_every, eval_s, validations):
        self.config = TrainConfig.from_dict(tiny_params(tmp_path, time_budget_s=840, warmup_ratio=0.0))
        self.planner = BudgetPlanner(self.config, planned_steps=198, tokens_per_step=100.0)
        self.optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=self.config.learning_rate)
        self.scheduler = make_scheduler(self.optimizer, self.config, total_steps, completed_steps=step)
        self.state = {"step": step, "total_steps": total_steps, "eval_every": eval_every, "budget_planned": True,
                      "train_s": step * seconds_per_step, "eval_s": eval_s, "history": [{}] * validations,
                      "elapsed_s": step * seconds_per_step + eval_s}

    def replan(self) -> None:
        if self.planner.replan(self.state):
            self.scheduler = make_scheduler(self.optimizer, self.config, self.state["total_steps"], self.state["step"])


def test_a_run_that_slows_down_is_replanned_to_end_within_its_budget(tmp_path):
    """The first plan rested on fast first steps (3.8 s); at 5.5 s per step the planned 198 do not
    fit: at the next validation the run is shortened to what the rest of the budget holds, and the
    cosine schedule is re-planned to reach 0 there (a hard stop would leave it half-way)."""
    steps, eval_s = 51, 2 * 8.5
    recipe = MidRun(tmp_path, total_steps=198, step=steps, seconds_per_step=5.5, eval_every=25,
                             eval_s=eval_s, validations=3)
    recipe.replan()
    total = recipe.state["total_steps"]
    # what the rest of the budget holds at 5.5 s per step, after the validations still to come
    assert 140 <= total <= 148, total
    assert recipe.state["budget_replans"] == [
        {"at_step": 51, "seconds_per_step": 5.5, "from_steps": 198, "to_steps": total}]
    lr_now = recipe.scheduler.get_last_lr()[0]
    for _ in range(total - steps):
        recipe.scheduler.step()
    assert recipe.scheduler.get_last_lr()[0] < 1e-6 < lr_now  # the schedule now ends at the new last step
    # on pace (the plan holds): nothing changes
    recipe.state |= {"train_s": steps * 3.8, "elapsed_s": steps * 3.8 + eval_s, "total_steps": 198}
    recipe.state.pop("budget_replans")
    recipe.replan()
    assert recipe.state["total_steps"] == 198 and "budget_replans" not in recipe.state


def test_a_run_ahead_of_its_first_plan_is_lengthened_up_to_its_epochs(tmp_path):
    """Seen on an AMD AVX512-BF16 CPU: the first 3 steps took 7.7 s each, so 96 of 198 steps were
    planned; the run then went at 6.6 s per step and its loop ended 94 s inside the budget. At a
    validation the run is re-planned to what the rest of the budget holds (the validations a
    longer run adds counted), never beyond the steps its epochs allow."""
    steps, eval_s = 48, 5 * 10.7
    recipe = MidRun(tmp_path, total_steps=96, step=steps, seconds_per_step=6.6, eval_every=12,
                             eval_s=eval_s, validations=5)
    recipe.replan()
    total = recipe.state["total_steps"]
    # (840 - 370 s) at 6.6 s per step with a validation of 10.7 s every 12 steps: ~61 more steps
    assert 105 <= total <= 112, total
    seconds = (total - steps) * 6.6 + -(-(total - steps) // 12) * 10.7
    assert recipe.state["elapsed_s"] + seconds <= 840
    assert recipe.state["budget_replans"][0]["from_steps"] == 96
    for _ in range(total - steps):
        recipe.scheduler.step()
    assert recipe.scheduler.get_last_lr()[0] < 1e-6  # the schedule ends at the new last step
    # much faster than planned: never more steps than the epochs allow
    recipe.state |= {"total_steps": 96, "train_s": steps * 0.5, "elapsed_s": steps * 0.5 + eval_s}
    recipe.replan()
    assert recipe.state["total_steps"] == 198


def test_empty_training_set_is_a_clear_error(tiny_gemma_path, tmp_path):
    with pytest.raises(ValueError, match="qa_v3"):
        build_examples([], ROWS, tiny_gemma_path, tiny_params(tmp_path))


def test_split_is_chunk_disjoint_and_holds_out_test_chunks(tmp_path):
    rows = [dict(row, chunk_id=f"c{n}") for n in range(20) for row in BASE_ROWS]
    params = tiny_params(tmp_path, split={"validation_share": 0.1, "validation_max_rows": 6, "test_share": 0.25})
    train, validation, heldout, report = split_training_data(rows, params)
    keys = [{r["chunk_id"] for r in part} for part in (train, validation, heldout)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert len(keys[2]) == 5 and len(heldout) == 20 and len(keys[1]) == 2 and len(validation) == 6
    assert len(train) == 4 * 13 and report["validation_groups"] == sorted(keys[1])
    assert split_training_data(rows, params)[1] == validation, "the split is seeded"
    # rows without chunk ids (the paper's published data) are grouped by their context
    published = [{k: v for k, v in r.items() if k != "chunk_id"} | {"input": f"context {r['chunk_id']}"} for r in rows]
    train_p, validation_p, heldout_p, _ = split_training_data(published, params)
    contexts = [{r["input"] for r in part} for part in (train_p, validation_p, heldout_p)]
    assert not (contexts[0] & contexts[1]) and not (contexts[0] & contexts[2]) and len(contexts[2]) == 5
    with pytest.raises(ValueError, match="too few"):
        split_training_data(rows[:4], params)


def test_rows_unfit_to_train_on_are_dropped_and_counted(tiny_gemma_path, tmp_path):
    long_context = " ".join(f"Sentence {i} is filler about Kaggle." for i in range(60))
    rows = [
        *BASE_ROWS,
        dict(BASE_ROWS[2], output=""),
        dict(BASE_ROWS[2], instruction="  "),
        dict(BASE_ROWS[2], input=""),
        {"input": "The answer is 42 GPUs. " + long_context, "instruction": "How many GPUs?",
         "output": "The answer is 42 GPUs.", "task_type": "extractive_qa"},
    ]
    train, _, report = build_examples(rows, BASE_ROWS, tiny_gemma_path, tiny_params(tmp_path, max_length=64))
    assert [e["row"] for e in train] == [0, 1, 2, 3]
    dropped = {k: v for k, v in report["rows_not_trained_or_cut"].items() if "truncated" not in k}
    assert dropped == {
        "train:answer-outside-kept-context": 1, "train:empty-context": 1, "train:empty-output": 1,
        "train:empty-question": 1,
    }


RETRIEVAL = {"method": "bm25", "top_k": 2, "rrf_k": 60, "batch_size": 8}
USER_QUESTIONS = [{"question": "How long may a notebook session run?", "expected_answer": "12 hours.",
                   "url": "https://docs.test/chunk-0"}]


def _index(rows: list[dict]) -> dict:
    """A real retrieval index (MiniLM + BM25) over the rows' chunks."""
    from kaggle_qa.retrieval import build_index

    chunks = {row["chunk_id"]: {"chunk_id": row["chunk_id"], "url": f"https://docs.test/{row['chunk_id']}", "title": "",
                                "heading_path": [], "text": row["input"]} for row in rows}
    return build_index(list(chunks.values()))


# answers written by someone else over other chunks (qa_cross_teacher): the adapter strength is chosen on them
OTHERS = [{"input": f"Notebook sessions, part {i}: a session may run for {i + 9} hours.",
           "instruction": f"For how long can a notebook session, part {i}, run?",
           "output": f"It can run for up to {i + 9} hours.", "chunk_id": f"other-{i}"} for i in range(6)]


def test_train_pipeline_lowers_validation_loss_and_saves_a_complete_adapter(tiny_gemma_path, tmp_path):
    params = tiny_params(tmp_path, strength={"grid": [0.25, 0.5, 1.0], "fallback": 1.0,
                                             "others": {"share": 1.0, "max_rows": 3, "seed": 0}})
    catalog = DataCatalog(
        {"qa_v3": MemoryDataset(ROWS), "base_model": MemoryDataset(tiny_gemma_path),
         "params:train": MemoryDataset(params), "adapter": FolderDataset(str(tmp_path / "adapter")),
         "retrieval_index": MemoryDataset(_index(ROWS)), "params:retrieval": MemoryDataset(RETRIEVAL),
         "user_questions": MemoryDataset(USER_QUESTIONS), "params:user_questions": MemoryDataset({"selection_fraction": 1.0}),
         "qa_cross_teacher": MemoryDataset(OTHERS),
         "train_metrics": JSONDataset(filepath=str(tmp_path / "train_metrics.json")),
         "learning_curves": MatplotlibDataset(filepath=str(tmp_path / "learning_curves.png"))}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    # random tiny weights start at ln(262144) = 12.48; a real drop, not noise (see the 270M run in README)
    assert metrics["best_val_loss"] < metrics["base_val_loss"] - 0.1, metrics["history"]
    assert metrics["train_examples"] == 8 and metrics["validation_examples"] == 4
    assert metrics["steps"] == 6 and metrics["tokens_per_s"] > 0 and metrics["optimizer"] == "AdamW"
    assert metrics["examples_seen"] == 24 and metrics["epochs_completed"] == 3 and not metrics["budget_cut"]
    assert metrics["train_label_accuracy"] is not None and metrics["data"]["train_label_examples"] == 4
    assert metrics["split"]["validation_rows"] == 4 and "validation_groups" not in metrics["split"]
    assert [h["step"] for h in metrics["history"]] == list(range(7))
    # the user's selection question is measured beside validation (never trained on): its loss falls too
    user = [h["user_selection_loss"] for h in metrics["history"]]
    assert user[-1] < user[0] - 0.1, user
    assert (tmp_path / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    folder = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "training_params.json", "base_model.json",
            "data_split.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "base_model.json").read_text()) == model_identity(tiny_gemma_path)
    recorded = json.loads((folder / "training_params.json").read_text())
    assert recorded["learning_rate"] == params["learning_rate"] and recorded["max_length"] == 96
    assert recorded["resolved_compute_dtype"] == "float32" and recorded["prompt_template_version"] == PROMPT_TEMPLATE_VERSION
    split = json.loads((folder / "data_split.json").read_text())
    assert len(split["validation_groups"]) == 1 and len(split["train_groups"]) == 2
    assert not Path(params["checkpoint_dir"]).exists(), "checkpoints are removed after success"
    # the strength: chosen on the 3 others' answers + the user's question, the lowest loss, recorded in the adapter
    strength = metrics["strength"]
    assert strength["examples"] == 4 and [row["strength"] for row in strength["table"]] == [0.0, 0.25, 0.5, 1.0]
    best = min(strength["table"][1:], key=lambda row: row["loss"])
    assert strength["chosen"] == best["strength"] == recorded["strength_chosen"]
    assert strength["table"][0]["loss"] > best["loss"], "training on similar rows helps the others' answers too"
    assert json.loads((folder / "adapter_config.json").read_text())["lora_alpha"] == pytest.approx(8 * best["strength"])
    assert len(split["others_selection_groups"]) == 3 and set(split["others_selection_groups"]) <= {r["chunk_id"] for r in OTHERS}


def test_time_budget_sizes_the_run_and_its_lr_schedule(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, epochs=20, eval_every_steps=None, evaluations_per_run=3, time_budget_s=1e-3,
                         budget_calibration_steps=2, warmup_ratio=0.0)
    _, metrics = run_train(train, validation, tiny_gemma_path, params)
    # after the 2 timed steps nothing more fits a 1 ms budget: the run ends at the next step, at lr 0
    assert metrics["total_steps_planned"] == 40 and metrics["steps"] == 3 and metrics["budget_cut"]
    assert metrics["budget_estimate"]["affordable_steps"] <= 3
    assert metrics["history"][-1]["step"] == 3 and metrics["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["examples_seen"] == 12 and metrics["tokens_seen"] > 0
    _, unbounded = run_train(train, validation, tiny_gemma_path, dict(params, time_budget_s=None, max_steps=5,
                                                                      checkpoint_dir=str(tmp_path / "other")))
    assert unbounded["steps"] == 5 and not unbounded["budget_cut"]


def test_best_only_adapter_and_early_stopping(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    # Training lowers the loss a little, but never by min_delta: no evaluation counts as an improvement,
    # so patience 2 with an eval every step stops after 2 steps and the step-0 weights are what is kept.
    params = tiny_params(tmp_path, early_stopping_patience=2, early_stopping_min_delta=1.0)
    adapter, metrics = run_train(train, validation, tiny_gemma_path, params)
    assert metrics["stopped_early"] and metrics["steps"] == 2
    assert metrics["best_step"] == 0 and metrics["best_val_loss"] == metrics["base_val_loss"]
    assert metrics["history"][-1]["val_loss"] != metrics["base_val_loss"], "the last weights differ from the kept ones"
    assert all(torch.count_nonzero(b) == 0 for b in lora_b_weights(adapter.model)), "best = untouched LoRA"
    # the training-row fit is reported for the kept (base) weights and, apart, for the last ones
    assert metrics["last_step_train_fit_loss"] < metrics["train_fit_loss"] - 0.01, metrics
    assert metrics["last_step_train_label_accuracy"] is not None


def test_training_fit_of_the_last_weights_is_the_kept_one_when_the_last_step_is_kept(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    _, metrics = run_train(train, validation, tiny_gemma_path, tiny_params(tmp_path, max_steps=3))
    assert metrics["best_step"] == metrics["steps"] == 3, metrics["history"]
    assert metrics["last_step_train_fit_loss"] == metrics["train_fit_loss"]
    assert metrics["last_step_train_label_accuracy"] == metrics["train_label_accuracy"]


def test_nan_loss_stops_with_a_clear_message(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, learning_rate=1e20, warmup_ratio=0.0, eval_every_steps=100)
    with pytest.raises(FloatingPointError, match="training loss is (nan|inf).*lower learning_rate"):
        run_train(train, validation, tiny_gemma_path, params)


RESUME_SCRIPT = """
import json, sys
from kaggle_qa.pipelines.train.nodes import train_adapter
data = json.load(open(sys.argv[1]))
train_adapter(data["train"], data["validation"], {}, {}, data["base_model"], data["params"])
"""


def test_resume_after_kill_9_reaches_the_same_weights(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, epochs=4, eval_every_steps=2, lora={"dropout": 0.1}, checkpoint_every_steps=1)
    reference, reference_metrics = run_train(
        train, validation, tiny_gemma_path, dict(params, checkpoint_dir=str(tmp_path / "uninterrupted"))
    )

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"train": train, "validation": validation, "base_model": tiny_gemma_path,
                               "params": params}))
    checkpoint = Path(params["checkpoint_dir"]) / CHECKPOINT_FILE
    child = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(job)], cwd=PROJECT_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if checkpoint.exists():
            step = torch.load(checkpoint, weights_only=False)["state"]["step"]
            if step >= 3:
                os.kill(child.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    child.wait()
    assert killed_at is not None and killed_at < reference_metrics["steps"], "the child was not killed mid-run"

    resumed, resumed_metrics = run_train(train, validation, tiny_gemma_path, params)
    assert resumed_metrics["steps"] == reference_metrics["steps"]
    assert resumed_metrics["best_val_loss"] == pytest.approx(reference_metrics["best_val_loss"], rel=1e-4)
    for got, want in zip(lora_b_weights(resumed.model), lora_b_weights(reference.model)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not checkpoint.parent.exists()


def test_checkpoint_from_other_settings_or_data_is_refused(tiny_gemma_path, tmp_path):
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, max_steps=1)
    checkpoint_dir = Path(params["checkpoint_dir"])
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    recipe = LoRAFinetuneRecipe(tiny_gemma_path, params, train, validation)
    recipe.setup()
    recipe.save_checkpoint()
    with pytest.raises(ValueError, match="other parameters"):
        run_train(train, validation, tiny_gemma_path, dict(params, learning_rate=1e-3))
    # same number of examples, other content: refused too (the fingerprint hashes the data)
    other = [dict(e, input_ids=list(reversed(e["input_ids"]))) for e in train]
    with pytest.raises(ValueError, match="other parameters, data"):
        run_train(other, validation, tiny_gemma_path, params)
    assert (checkpoint_dir / CHECKPOINT_FILE).exists()


def test_sweep_runs_namespaced_experiments_into_a_table(tiny_gemma_path, tmp_path):
    experiments = ("exp_2", "exp_8")
    sweep = {"common": {"max_train_examples": 4, "split": {"validation_max_rows": 2}, "epochs": 1, "max_steps": 1},
             "experiments": {"exp_2": {"lora": {"r": 8, "alpha": 16}, "batch_size": 2},
                             "exp_8": {"lora": {"r": 4, "alpha": 8, "dropout": 0.15}, "batch_size": 4}}}
    pipe = create_sweep_pipeline(experiments)
    assert {n.namespace for n in pipe.nodes} >= {"sweep.exp_2", "sweep.exp_8"}
    datasets = {"qa_v3": MemoryDataset(ROWS), "base_model": MemoryDataset(tiny_gemma_path),
                "params:train": MemoryDataset(tiny_params(tmp_path)), "params:sweep": MemoryDataset(sweep),
                "sweep_table": SweepTableDataset(str(tmp_path / "sweep_table"))}
    for name in experiments:
        datasets[f"params:sweep.experiments.{name}"] = MemoryDataset(sweep["experiments"][name])
    SequentialRunner().run(pipe, DataCatalog(datasets))
    table = SweepTableDataset(str(tmp_path / "sweep_table")).load()
    assert list(table["experiment"]) == ["exp_2", "exp_8"]
    assert list(table["lora_rank"]) == [8, 4] and list(table["lora_dropout"]) == [0.0, 0.15]
    assert (table["test_loss"] <= table["base_test_loss"]).all()
    markdown = (tmp_path / "sweep_table.md").read_text()
    assert markdown.startswith("| experiment | lora_rank |") and "| exp_8 | 4 |" in markdown


NF4 = {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True}


@pytest.fixture(scope="module")
def tiny_4bit_gemma_path(embedded_gemma_path, tmp_path_factory) -> str:
    """A tiny random Gemma 3 whose layer shapes bitsandbytes' CPU repacking accepts (multiples of 32/64)."""
    from kaggle_qa.modeling import make_tiny_gemma

    return str(make_tiny_gemma(embedded_gemma_path, tmp_path_factory.mktemp("tiny4"), hidden_size=64,
                               intermediate_size=128, head_dim=32))


def early_lora_grads(recipe, examples) -> dict[str, torch.Tensor]:
    """Gradients of the first decoder layer's LoRA B matrices after one training forward/backward."""
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum

    recipe.model.train()
    recipe.optimizer.zero_grad(set_to_none=True)
    batch = recipe._batch(list(range(len(examples))), examples, weighted=True)
    with recipe._autocast():
        loss_sum, count = answer_loss_sum(recipe.causal_lm, batch, 1024)
    (loss_sum / count).backward()
    return {n: p.grad.detach().clone() for n, p in recipe.model.named_parameters()
            if ".layers.0." in n and "lora_B" in n and p.grad is not None}


def force_avx512_repacking(model) -> None:
    """Make bitsandbytes behave as on an AVX512-BF16 CPU (repack 4-bit weights at eval-mode forwards)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = True


def test_the_recipes_validation_pass_never_cuts_4bit_gradients(tiny_4bit_gemma_path, tmp_path):
    """After the recipe's own validation pass, early-layer LoRA gradients equal those of a model that
    never ran in eval mode, even when bitsandbytes is told to repack (as it does on AVX512-BF16 CPUs)."""
    from kaggle_qa.modeling import packed_4bit_layers
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    params = tiny_params(tmp_path, quantization=NF4, compute_dtype="bfloat16", lora={"dropout": 0.0})
    train, validation = split_and_build(tiny_4bit_gemma_path, params)
    fresh = LoRAFinetuneRecipe(tiny_4bit_gemma_path, params, train, validation)
    fresh.setup()
    torch.manual_seed(1)
    for name, param in fresh.model.named_parameters():  # non-zero B so that every LoRA matrix gets a gradient
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    lora = fresh._lora_state()
    want = early_lora_grads(fresh, train[:4])

    validated = LoRAFinetuneRecipe(tiny_4bit_gemma_path, params, train, validation)
    validated.setup()
    validated._load_lora_state(lora)
    force_avx512_repacking(validated.model)
    validated.evaluate()  # the recipe's validation pass: eval mode, no grad
    assert packed_4bit_layers(validated.model) == 0, "validation repacked the 4-bit weights"
    got = early_lora_grads(validated, train[:4])
    assert want and want.keys() == got.keys()
    assert all(torch.count_nonzero(g) > 0 for g in want.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-7, msg=name)


@pytest.mark.skipif(not __import__("bitsandbytes.functional").functional.has_avx512bf16(),
                    reason="bitsandbytes repacks 4-bit weights by itself only on AVX512-BF16 CPUs")
def test_without_the_guard_an_eval_pass_repacks_and_cuts_gradients(tiny_4bit_gemma_path, tmp_path):
    """The bug the guard prevents, shown on a CPU where it happens (the test above then proves the fix)."""
    from kaggle_qa.modeling import packed_4bit_layers
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe, answer_loss_sum

    params = tiny_params(tmp_path, quantization=NF4, compute_dtype="bfloat16", lora={"dropout": 0.0})
    train, validation = split_and_build(tiny_4bit_gemma_path, params)
    recipe = LoRAFinetuneRecipe(tiny_4bit_gemma_path, params, train, validation)
    recipe.setup()
    for name, param in recipe.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    want = early_lora_grads(recipe, train[:4])
    force_avx512_repacking(recipe.model)
    recipe.model.eval()
    with torch.no_grad(), recipe._autocast():
        answer_loss_sum(recipe.causal_lm, recipe._batch([0, 1], validation), 1024)
    assert packed_4bit_layers(recipe.model) > 0
    got = early_lora_grads(recipe, train[:4])
    assert any(not torch.allclose(got[n], want[n], rtol=1e-2, atol=1e-6) for n in want)


def test_merged_finetuned_model_computes_the_function_that_was_trained(tiny_4bit_gemma_path, tmp_path):
    """load_finetuned_model merges into the dequantized NF4 weights: same choices and near-equal logits
    as base + adapter unmerged, as trained; merging into the full-precision base would differ more."""
    from peft import PeftModel

    from kaggle_qa.modeling import load_finetuned_model, load_model
    from kaggle_qa.pipelines.train.recipe import collate

    params = tiny_params(tmp_path, quantization=NF4, compute_dtype="float32", max_steps=3)
    train, validation = split_and_build(tiny_4bit_gemma_path, params)
    adapter, _ = run_train(train, validation, tiny_4bit_gemma_path, params)
    FolderDataset(str(tmp_path / "adapter")).save(adapter)
    folder = next((tmp_path / "adapter").rglob("adapter_config.json")).parent
    batch = collate(train[:6], pad_token_id=0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        trained = adapter.model(**inputs).logits.float()
        merged = load_finetuned_model(tiny_4bit_gemma_path, folder, dtype="float32")(**inputs).logits.float()
        naive_model = PeftModel.from_pretrained(load_model(tiny_4bit_gemma_path, dtype="float32"), str(folder))
        naive = naive_model.merge_and_unload()(**inputs).logits.float()
    answer = batch["labels"] != IGNORE_INDEX
    gap = (merged - trained).abs()[answer].max().item()
    naive_gap = (naive - trained).abs()[answer].max().item()
    assert gap < 1e-3 and gap < naive_gap / 10, (gap, naive_gap)
    assert torch.equal(merged[answer].argmax(-1), trained[answer].argmax(-1))


@pytest.mark.slow
def test_two_real_qlora_steps_on_gemma3_270m_and_reload(embedded_gemma_path, tmp_path):
    """Real weights, real NF4 4-bit QLoRA on CPU; the saved adapter reloads onto a fresh 4-bit base (training's
    kernel and fp32 norms, as prepare_model_for_kbit_training leaves them) with the validation loss recorded."""
    from peft import PeftModel, prepare_model_for_kbit_training

    from kaggle_qa.modeling import keep_4bit_weights_trainable, load_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    params = tiny_params(
        tmp_path, compute_dtype="auto", max_length=64, batch_size=1, gradient_accumulation_steps=1, epochs=1,
        gradient_checkpointing=True, learning_rate=2e-4, eval_every_steps=2, max_steps=2, train_fit_examples=0,
        quantization=NF4,
    )
    train, validation = split_and_build(embedded_gemma_path, params, ROWS[0:1] + ROWS[4:5] + ROWS[8:9])  # 3 chunks: 2 train, 1 validation
    adapter, metrics = run_train(train, validation, embedded_gemma_path, params)
    assert metrics["steps"] == 2 and metrics["compute_dtype"] == resolve_dtype("auto")
    assert any(torch.count_nonzero(b) > 0 for b in lora_b_weights(adapter.model)), "LoRA weights were updated"
    assert "Linear4bit" in {type(m).__name__ for m in adapter.model.modules()}
    FolderDataset(str(tmp_path / "adapter")).save(adapter)
    folder = next((tmp_path / "adapter").rglob("adapter_config.json")).parent

    dtype = metrics["compute_dtype"]
    base = load_model(embedded_gemma_path, dtype=dtype, quantization={**params["quantization"], "compute_dtype": dtype})
    keep_4bit_weights_trainable(base)  # the kernel training used (not bitsandbytes' packed inference kernel)
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)  # fp32 norms/embeddings, as trained
    reloaded = PeftModel.from_pretrained(base, str(folder))
    batch = collate(validation, pad_token_id=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        loss_sum, count = answer_loss_sum(reloaded.get_base_model(), batch, 1024)
    assert loss_sum.item() / count == pytest.approx(metrics["strength"]["validation_loss"], rel=2e-3)


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="known gap: with bf16 compute the 4-bit path is numerically unstable on "
                   "short rows of Gemma 3 270M (seen: 4-bit base 3.15, + a LoRA with |B| <= 2e-4 2.43, while the dense "
                   "dequantized model gives 2.73 with or without it), so the merged dense model cannot match the 4-bit "
                   "number; fp32 compute agrees (tiny-model test)")
def test_merged_real_qlora_adapter_matches_training_with_bf16_compute(embedded_gemma_path, tmp_path):
    from kaggle_qa.modeling import load_finetuned_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    params = tiny_params(
        tmp_path, compute_dtype="bfloat16", max_length=64, batch_size=1, gradient_accumulation_steps=1, epochs=1,
        learning_rate=2e-4, eval_every_steps=2, max_steps=2, train_fit_examples=0, quantization=NF4,
    )
    train, validation = split_and_build(embedded_gemma_path, params, ROWS[0:1] + ROWS[4:5] + ROWS[8:9])
    adapter, metrics = run_train(train, validation, embedded_gemma_path, params)
    FolderDataset(str(tmp_path / "adapter")).save(adapter)
    folder = next((tmp_path / "adapter").rglob("adapter_config.json")).parent
    merged = load_finetuned_model(embedded_gemma_path, folder, dtype="bfloat16")
    batch = collate(validation, pad_token_id=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        merged_sum, count = answer_loss_sum(merged, batch, 1024)
    assert merged_sum.item() / count == pytest.approx(metrics["strength"]["validation_loss"], rel=2e-2)
