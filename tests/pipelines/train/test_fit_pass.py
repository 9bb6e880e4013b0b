"""The training-row fit after the loop: one teacher-forced pass per set of weights measured (the last
weights apart only when they are not the kept ones), each logged with its wall time (not timed here)."""

from __future__ import annotations

import logging

from tests.pipelines.train.test_train import run_train, split_and_build, tiny_params


def _fit_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training-row fit of the")]


def test_the_fit_pass_runs_once_when_the_last_step_is_kept_and_twice_otherwise(tiny_gemma_path, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kaggle_qa.pipelines.train.recipe")
    train, validation = split_and_build(tiny_gemma_path, tiny_params(tmp_path))
    _, kept_last = run_train(train, validation, tiny_gemma_path, tiny_params(tmp_path, max_steps=2))
    lines = _fit_lines(caplog)
    assert kept_last["best_step"] == kept_last["steps"] == 2
    assert len(lines) == 1 and lines[0].startswith(
        f"Training-row fit of the kept weights (train_fit) on {kept_last['train_fit_examples']} rows: ")
    caplog.clear()
    # nothing improves by min_delta: the step-0 weights are kept, the last ones are measured apart
    _, kept_base = run_train(train, validation, tiny_gemma_path, tiny_params(
        tmp_path, early_stopping_patience=1, early_stopping_min_delta=1.0, checkpoint_dir=str(tmp_path / "other")))
    lines = _fit_lines(caplog)
    assert kept_base["best_step"] == 0 and kept_base["steps"] == 1
    assert [line.split(" on ")[0] for line in lines] == ["Training-row fit of the last weights (train_fit_last)",
                                                          "Training-row fit of the kept weights (train_fit)"]
    assert f"loss {kept_base['train_fit_loss']:.4f}" in lines[1]
