"""Multi-process training on CPU: 2 gloo ranks under torchrun, started by the train node.

Tolerance: 2 ranks × batch b and 1 process × batch 2b see the same rows in the same steps; they
differ only in float summation order (two all-reduced partial sums instead of one), so losses
agree to rel 1e-5 and LoRA weights to atol 1e-5 (seen: 4e-7 after 2 steps of lr 3e-2)."""

from __future__ import annotations

import json

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kaggle_qa.pipelines.train.checkpoint import CHECKPOINT_FILE
from kaggle_qa.pipelines.train.launch import (
    DistributedTrainingError,
    child_environment,
    failed_rank,
    torchrun_command,
)
from kaggle_qa.pipelines.train.nodes import train_adapter

from .test_train import split_and_build, tiny_params

SETTINGS = dict(gradient_accumulation_steps=1, epochs=3, eval_every_steps=2, length_group_size=1,
                checkpoint_every_steps=1)


def adapter_weights(adapter, folder: Path) -> dict[str, torch.Tensor]:
    adapter.save_pretrained(folder)
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_run(got: tuple, want: tuple) -> None:
    (got_adapter, got_metrics, got_weights), (want_adapter, want_metrics, want_weights) = got, want
    assert got_metrics["steps"] == want_metrics["steps"] and got_metrics["best_step"] == want_metrics["best_step"]
    assert got_metrics["examples_seen"] == want_metrics["examples_seen"]
    assert got_metrics["supervised_tokens_seen"] == want_metrics["supervised_tokens_seen"]
    for g, w in zip(got_metrics["history"], want_metrics["history"], strict=True):
        assert g["step"] == w["step"]
        assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5)
        assert (g["train_loss"] is None) == (w["train_loss"] is None)
        if w["train_loss"] is not None:
            assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5)
    assert got_weights.keys() == want_weights.keys()
    for name in want_weights:
        torch.testing.assert_close(got_weights[name], want_weights[name], rtol=0, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def examples(tiny_gemma_path, tmp_path_factory):
    return split_and_build(tiny_gemma_path, tiny_params(tmp_path_factory.mktemp("split")))


@pytest.fixture(scope="module")
def one_process_at_twice_the_batch(tiny_gemma_path, examples, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    params = tiny_params(tmp, batch_size=4, **SETTINGS)
    adapter, metrics = train_adapter(*examples, {}, {}, tiny_gemma_path, params)
    return adapter, metrics, adapter_weights(adapter, tmp / "adapter")


def two_ranks(tmp_path: Path, strategy: str = "ddp", **overrides) -> dict:
    return tiny_params(tmp_path, batch_size=2, distributed={"num_processes": 2, "strategy": strategy},
                       **{**SETTINGS, **overrides})


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_ranks_train_what_one_process_trains_at_twice_the_batch(
        tiny_gemma_path, examples, one_process_at_twice_the_batch, tmp_path, strategy):
    """ddp: every rank holds the model, LoRA gradients summed; fsdp: the decoder layers sharded
    with FSDP2's fully_shard over the 2 gloo ranks (validation on both, FSDP reduces gradients)."""
    adapter, metrics = train_adapter(*examples, {}, {}, tiny_gemma_path, two_ranks(tmp_path, strategy))
    assert metrics["num_processes"] == 2 and metrics["steps"] == 6
    assert metrics["best_val_loss"] < metrics["base_val_loss"]
    assert_same_run((adapter, metrics, adapter_weights(adapter, tmp_path / "adapter")), one_process_at_twice_the_batch)
    # the adapter strength (no answers by others here: the fallback) is applied by rank 0 and saved with the adapter
    chosen = metrics["strength"]["chosen"]
    assert chosen == one_process_at_twice_the_batch[1]["strength"]["chosen"] == 0.5
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == pytest.approx(8 * chosen)
    assert not list(tmp_path.glob("train-job-*")) and not (tmp_path / "checkpoints").exists()


def test_a_killed_rank_fails_the_node_naming_it_and_the_rerun_resumes(
        tiny_gemma_path, examples, one_process_at_twice_the_batch, tmp_path):
    params = two_ranks(tmp_path)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = train_adapter(*examples, {}, {}, tiny_gemma_path, params)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    checkpoint = Path(params["checkpoint_dir"]) / CHECKPOINT_FILE
    killed_at, deadline = None, time.time() + 240
    while killed_at is None and thread.is_alive() and time.time() < deadline:
        pid_files = list(tmp_path.glob("train-job-*/rank1.pid"))
        if pid_files and checkpoint.exists():
            step = torch.load(checkpoint, weights_only=False)["state"]["step"]
            if 2 <= step < 6:
                os.kill(int(pid_files[0].read_text()), signal.SIGKILL)
                killed_at = step
        time.sleep(0.02)
    thread.join(timeout=240)
    assert killed_at is not None, "rank 1 was not killed mid-run"
    error = outcome.get("error")
    assert isinstance(error, DistributedTrainingError), outcome
    assert "rank 1 of 2" in str(error) and "no adapter was written" in str(error)
    assert "result" not in outcome and not list(tmp_path.glob("train-job-*"))  # no adapter, no job folder left
    assert checkpoint.exists()

    adapter, metrics = train_adapter(*examples, {}, {}, tiny_gemma_path, params)  # same world size: resumes
    assert_same_run((adapter, metrics, adapter_weights(adapter, tmp_path / "adapter")), one_process_at_twice_the_batch)
    assert not checkpoint.parent.exists()


def test_torchrun_command_and_the_ranks_environment():
    command = torchrun_command("/tmp/job", 2)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert command[command.index("--nproc_per_node") + 1] == "2"
    assert command[-3:] == ["-m", "kaggle_qa.pipelines.train.entry", "/tmp/job"]
    env = child_environment(2, base={}, cuda=False, cpu_count=2)
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and env["OMP_NUM_THREADS"] == "1"
    assert child_environment(4, base={}, cuda=False, cpu_count=16)["OMP_NUM_THREADS"] == "4"
    assert "GLOO_SOCKET_IFNAME" not in child_environment(2, base={}, cuda=True, cpu_count=2)
    assert child_environment(2, base={"OMP_NUM_THREADS": "3"}, cuda=False, cpu_count=2)["OMP_NUM_THREADS"] == "3"


def test_the_failed_rank_is_read_from_torchruns_report():
    report = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
kaggle_qa.pipelines.train.entry FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_19:30:00
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 1234)
"""
    assert failed_rank(report) == (1, "-9")
    assert failed_rank("nothing useful") == (None, None)


def test_the_ranks_get_the_parents_mlflow_run(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            env = child_environment(2, base={}, cuda=False, cpu_count=2)
        assert env["MLFLOW_RUN_ID"] == run.info.run_id and env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
        assert "MLFLOW_RUN_ID" not in child_environment(2, base={}, cuda=False, cpu_count=2)
    finally:
        mlflow.set_tracking_uri(None)
