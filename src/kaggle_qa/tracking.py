"""The MLflow run of a `kedro run`, for code that logs into it (docs/tracking.md).

kedro-mlflow opens one MLflow run per `kedro run`; the hook in :mod:`kaggle_qa.hooks` fills it
from the versioned catalog. This module is what other code needs to log into that same run:

- :func:`active_run_id`: the run to log into, in the Kedro process (the thread's active run) or in
  a child process started by a node (``MLFLOW_RUN_ID``, MLflow's own variable);
- :func:`child_env`: the environment variables a node passes to the child processes it starts (the
  ranks of a distributed training run), so that they log into their parent's run;
- :func:`log_metrics`: log numbers at a step into that run (rank 0 only; nothing when untracked);
- :func:`flatten_numbers` / :func:`step_series`: the pure parts of turning a saved dict into metrics.

MLflow is imported only when a run is tracked: importing it costs seconds.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_ID_ENV = "MLFLOW_RUN_ID"  # MLflow's own: `mlflow.start_run()` in a child resumes this run
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
_NOT_IN_NAMES = re.compile(r"[^\w\-. :/]")  # MLflow accepts letters, digits, _ - . space : /


def active_run_id() -> str | None:
    """The MLflow run this code logs into, or None when nothing is tracked.

    In the Kedro process: the active run of this thread (kedro-mlflow's run of the `kedro run`, or
    a sweep experiment's child run while its node runs). In a child process: ``MLFLOW_RUN_ID``.
    """
    mlflow = sys.modules.get("mlflow")  # not imported: no run can be active in this process
    if mlflow is not None:
        run = mlflow.active_run()
        if run is not None:
            return run.info.run_id
    return os.environ.get(RUN_ID_ENV) or None


def absolute_tracking_uri(uri: str, base: str | Path | None = None) -> str:
    """``uri`` with a relative SQLite path made absolute (against ``base``, default the working directory),
    so that a child process started elsewhere opens the same store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        return prefix + str((Path(base or Path.cwd()) / uri[len(prefix):]).resolve())
    return uri


def child_env() -> dict[str, str]:
    """``MLFLOW_RUN_ID`` and ``MLFLOW_TRACKING_URI`` of the current run, for a child process's environment
    (``subprocess.Popen(..., env=os.environ | child_env())``); empty when nothing is tracked.

    The child logs with :func:`log_metrics` (or MLflow's ``MlflowClient().log_*(run_id, ...)``); it must not
    call ``mlflow.start_run()``/``end_run()``, which would mark the parent's run finished.
    """
    run_id = active_run_id()
    if run_id is None:
        return {}
    import mlflow

    return {RUN_ID_ENV: run_id, TRACKING_URI_ENV: absolute_tracking_uri(mlflow.get_tracking_uri())}


def is_main_rank() -> bool:
    """True outside distributed runs and on rank 0 (``RANK`` as torchrun sets it)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, run_id: str | None = None) -> int:
    """Log the numbers of ``metrics`` (nested dicts flattened, ``a.b``) at ``step`` into ``run_id`` (default
    :func:`active_run_id`). Only rank 0 logs; nothing happens when no run is tracked. Returns how many were logged."""
    run_id = run_id or active_run_id()
    if run_id is None or not is_main_rank():
        return 0
    values = flatten_numbers(metrics)
    if values:
        log_metric_points(run_id, [(key, value, step or 0) for key, value in values.items()])
    return len(values)


def log_metric_points(run_id: str, points: Iterable[tuple[str, float, int]]) -> None:
    """(name, value, step) points into one run, in batches of MLflow's limit."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key=key, value=float(value), timestamp=now, step=int(step)) for key, value, step in points]
    client = MlflowClient()
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])


def metric_name(*parts: str) -> str:
    """Dotted name from ``parts`` (empty parts dropped), characters MLflow refuses replaced by ``_``."""
    return _NOT_IN_NAMES.sub("_", ".".join(str(part) for part in parts if str(part)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten_numbers(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in nested dicts as ``{"prefix.a.b": value}``; lists, strings, booleans, None skipped."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = metric_name(prefix, key)
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, name))
        elif _is_number(value):
            flat[name] = float(value)
    return flat


def step_series(records: Iterable[Mapping[str, Any]], prefix: str = "", step_key: str = "step") -> list[tuple[str, float, int]]:
    """(name, value, step) for each number of each record that has an integer ``step_key``
    (e.g. train_metrics' ``history``: one record per validation pass)."""
    points = []
    for record in records:
        step = record.get(step_key)
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        points.extend(
            (name, value, step)
            for name, value in flatten_numbers({k: v for k, v in record.items() if k != step_key}, prefix).items()
        )
    return points
