"""Multi-process training from a Kedro node: write the node's inputs to a job folder, run the
recipe's entry module under torchrun as a child process, wait, and read back what rank 0 wrote.

The node never forks itself into ranks (a library that re-executes the running program would run
`kedro run`, and every node before this one, once per rank: kedro issue #2049); torchrun starts
fresh interpreters on `kaggle_qa.pipelines.train.entry` instead."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import torch

from .config import TrainConfig
from .entry import ADAPTER_DIR, INPUTS, METRICS

logger = logging.getLogger(__name__)


class DistributedTrainingError(RuntimeError):
    """A rank of a multi-process run failed; the message names it."""


def torchrun_command(job_dir: str | Path, num_processes: int) -> list[str]:
    """The child command line: torchrun (`python -m torch.distributed.run`, the same interpreter)
    on one node with a local rendezvous, starting the entry module once per rank."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(num_processes), "--max_restarts", "0",
            "-m", "kaggle_qa.pipelines.train.entry", str(job_dir)]


def child_environment(num_processes: int, base: dict | None = None, cuda: bool | None = None,
                      cpu_count: int | None = None) -> dict:
    """The ranks' environment. On CPU: gloo over the loopback interface (GLOO_SOCKET_IFNAME=lo:
    the rendezvous is local and the host name may resolve to an interface the ranks cannot reach)
    and the cores shared out (OMP_NUM_THREADS = cores // ranks, 1 on 2 cores with 2 ranks: each
    rank otherwise starts a thread per core and they fight over them). A value already set wins.
    MLFLOW_RUN_ID and MLFLOW_TRACKING_URI: the parent's active MLflow run (kaggle_qa.tracking.child_env),
    so that the ranks log into it (rank 0 only, with kaggle_qa.tracking.log_metrics)."""
    env = dict(os.environ if base is None else base)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    cpu_count = cpu_count or os.cpu_count() or 1
    if not cuda:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count // num_processes)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kaggle_qa.tracking import child_env

    for key, value in child_env().items():  # MLFLOW_RUN_ID / MLFLOW_TRACKING_URI of the parent's run, if any
        env.setdefault(key, value)
    return env


def failed_rank(output: str) -> tuple[int | None, str | None]:
    """(rank, exit code) of torchrun's root-cause failure report, else (None, None)."""
    tail = output[output.rfind("Root Cause"):] if "Root Cause" in output else output
    rank = re.search(r"\brank\s*:\s*(\d+)", tail)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", tail)
    return (int(rank.group(1)) if rank else None, code.group(1) if code else None)


class AdapterFiles:
    """The adapter files rank 0 wrote, held in memory so that the job folder can go at once;
    `save_pretrained` writes them where the catalog's FolderDataset asks."""

    def __init__(self, folder: Path):
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*")) if p.is_file() and p.name != METRICS}

    def save_pretrained(self, folder: str | Path) -> None:
        for name, data in self.files.items():
            path = Path(folder) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def run_distributed(train_examples: list[dict], validation_examples: list[dict], base_model: str,
                    params: dict) -> tuple[AdapterFiles, dict, list[dict], str]:
    """Train with `train.distributed.num_processes` ranks; return (adapter files, metrics, history,
    compute dtype) from rank 0. DistributedTrainingError names the rank that failed; no adapter
    is returned then (rank 0 renames its adapter folder into place only at the very end)."""
    config = TrainConfig.from_dict(params)
    n = config.distributed.num_processes
    checkpoint_dir = Path(config.checkpoint_dir)
    checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="train-job-", dir=checkpoint_dir.parent))
    try:
        (job / INPUTS).write_text(json.dumps({
            "train_examples": train_examples, "validation_examples": validation_examples,
            "base_model": base_model, "params": params}))
        command = torchrun_command(job, n)
        logger.info("Training with %d processes: %s", n, " ".join(command))
        tail: deque[str] = deque(maxlen=400)
        with subprocess.Popen(command, env=child_environment(n), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1) as child:
            for line in child.stdout:  # the ranks' progress, live
                sys.stderr.write(line)
                tail.append(line)
            code = child.wait()
        output = "".join(tail)
        adapter = job / ADAPTER_DIR
        if code != 0 or not adapter.is_dir():
            rank, exit_code = failed_rank(output)
            who = f"rank {rank} of {n} (exit code {exit_code})" if rank is not None else f"torchrun (exit code {code})"
            raise DistributedTrainingError(
                f"distributed training failed: {who}; no adapter was written. The last checkpoint (if any) "
                f"is in {checkpoint_dir}: run again with the same settings and num_processes={n} to resume. "
                f"Last output:\n{''.join(list(tail)[-25:])}"
            )
        result = json.loads((adapter / METRICS).read_text())
        return AdapterFiles(adapter), result["metrics"], result["history"], result["compute_dtype"]
    finally:
        shutil.rmtree(job, ignore_errors=True)
