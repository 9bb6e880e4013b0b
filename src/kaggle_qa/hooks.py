"""Project hooks: what a `kedro run` puts into its MLflow run (docs/tracking.md).

kedro-mlflow (a Kedro plugin, registered by its entry point) opens one MLflow run per `kedro run`
and logs the parameters of each node (conf/base/mlflow.yml). :class:`TrackingHook` adds what
conf/base/tracking.yml names, read from what the versioned catalog has just saved:

- ``metrics``: the numbers of a saved dict (flattened, ``prefix.a.b``), and a list of per-step records
  in it (train_metrics' ``history``) as metric series at their ``step``;
- ``artifacts``: the file or folder the catalog wrote for a dataset (this run's version);
- ``child_runs``: each node in a namespace ``<group>.<name>`` (the sweep's experiments) gets a child
  run ``<name>`` with that experiment's own parameters and the numbers the node returned, so the
  sweep's runs sit side by side in MLflow's compare view.

The catalog stays the source of truth: nothing here changes what a node or dataset does, and
without an active MLflow run (tracking disabled for the pipeline) the hook does nothing.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from kaggle_qa.tracking import active_run_id, flatten_numbers, log_metric_points, metric_name, step_series

logger = logging.getLogger(__name__)
# kedro-mlflow imports MLflow's pyfunc model class, whose import warns about a `predict` we never use
# (silenced where the project's settings load first, e.g. `kaggle-qa ask`; the kedro CLI imports it earlier)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit


def saved_path(dataset: Any) -> Path | None:
    """Local path of the version ``dataset`` saved in this run (its file or folder), or None when the
    dataset has no local ``filepath``/``path`` (a memory or remote dataset)."""
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None or getattr(dataset, "_protocol", "file") not in ("file", None):
        return None
    if getattr(dataset, "_version", None) is not None:  # versioned: <filepath>/<save version>/<name>
        return Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))
    return Path(str(filepath))


def written_paths(path: Path | None) -> list[Path]:
    """The file or folder at ``path``, else the files ``<path>.*`` a dataset wrote beside it (a table saved
    as ``.csv`` and ``.md``)."""
    if path is None:
        return []
    if path.exists():
        return [path]
    return sorted(p for p in path.parent.glob(f"{path.name}.*") if p.is_file())


class TrackingHook:
    """Fills kedro-mlflow's run from the catalog as conf/base/tracking.yml says (see the module docstring)."""

    def __init__(self) -> None:
        self._config: dict = {}
        self._catalog = None
        self._child_runs: dict[str, str] = {}  # node name → child run id, while the node runs
        self._outer_run = None  # an MLflow run already active when the `kedro run` started

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.config import MissingConfigException

        try:
            self._config = dict(context.config_loader["tracking"] or {})
        except (MissingConfigException, KeyError):
            self._config = {}

    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which opens the run
    def before_pipeline_run(self, catalog) -> None:
        self._catalog = catalog
        mlflow = sys.modules.get("mlflow")
        self._outer_run = mlflow.active_run() if mlflow is not None else None

    @hook_impl(trylast=True)  # after kedro-mlflow's, which closes the run
    def after_pipeline_run(self) -> None:
        self._close_reopened_run()

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        self._close_reopened_run()

    def _close_reopened_run(self) -> None:
        """kedro-mlflow re-opens its run at each node (for threads); MLflow 3 stacks each re-opening and
        kedro-mlflow ends one, so the run stayed active and the next `kedro run` of the same process (a
        notebook, a test) logged into it. End what is left of it, unless the run was opened before Kedro's."""
        mlflow = sys.modules.get("mlflow")
        if mlflow is None or self._outer_run is not None:
            return
        while (run := mlflow.active_run()) is not None:
            status = mlflow.MlflowClient().get_run(run.info.run_id).info.status  # as kedro-mlflow ended it
            mlflow.end_run(status=status if status in ("FINISHED", "FAILED", "KILLED") else "FINISHED")

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        run_id = active_run_id()
        if run_id is None:
            return
        spec = (self._config.get("metrics") or {}).get(dataset_name)
        folder = (self._config.get("artifacts") or {}).get(dataset_name)
        try:  # the catalog has saved the data: a tracking failure is reported, it does not fail the run
            if spec is not None and isinstance(data, Mapping):
                self._log_dict(run_id, dataset_name, data, spec)
            if folder is not None:
                self._log_saved_files(run_id, dataset_name, str(folder))
        except Exception as error:  # noqa: BLE001 (a locked SQLite store, an unreachable server, ...)
            logger.warning("MLflow: %s not logged into run %s: %s: %s", dataset_name, run_id,
                           type(error).__name__, error)

    def _log_dict(self, run_id: str, name: str, data: Mapping, spec: Mapping) -> None:
        prefix = spec.get("prefix", name)
        keys = spec.get("keys")
        sections = {key: data[key] for key in keys if isinstance(data.get(key), Mapping)} if keys else data
        scalars = flatten_numbers(sections, prefix)
        points = [(key, value, 0) for key, value in scalars.items()]
        steps_key = spec.get("steps")
        if steps_key and isinstance(data.get(steps_key), list):
            points += step_series(data[steps_key], spec.get("steps_prefix", ""))
        if points:
            log_metric_points(run_id, points)
        logger.info("MLflow: %d numbers of %s logged (%d scalars)", len(points), name, len(scalars))

    def _log_saved_files(self, run_id: str, name: str, folder: str) -> None:
        from mlflow import MlflowClient

        dataset = self._catalog.get(name) if self._catalog is not None else None
        paths = written_paths(saved_path(dataset))
        if not paths:
            logger.warning("MLflow: %s is in tracking.yml's artifacts but has no local file to log", name)
            return
        client = MlflowClient()
        for path in paths:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=folder)
            else:
                client.log_artifact(run_id, str(path), artifact_path=folder)
        logger.info("MLflow: %s logged as artifacts %s/ (%s)", name, folder, ", ".join(p.name for p in paths))

    # ---- one child run per sweep experiment -------------------------------------------------------

    def _child_name(self, node) -> str | None:
        namespace = node.namespace or ""
        for group in self._config.get("child_runs") or []:
            if namespace.startswith(f"{group}."):
                return namespace[len(group) + 1:]
        return None

    @hook_impl(trylast=True)  # after kedro-mlflow's, which logs the node's parameters into the parent run
    def before_node_run(self, node, inputs: dict[str, Any]) -> None:
        name = self._child_name(node)
        if name is None or active_run_id() is None:
            return
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        parent = mlflow.active_run()
        child = mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id)
        self._child_runs[node.name] = child.info.run_id
        # the experiment's own parameters (the input named after it, e.g. params:sweep.experiments.exp_1),
        # under the same names in every child run so that they line up in the compare view
        own = {key: value for key, value in inputs.items()
               if key.startswith("params:") and key.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]}
        params = {}
        for value in own.values():
            params.update(_flatten_params(value) if isinstance(value, Mapping) else {"value": value})
        batch = [Param(metric_name(key), str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in params.items()]
        client = MlflowClient()
        for start in range(0, len(batch), MAX_PARAMS_PER_BATCH):
            client.log_batch(child.info.run_id, params=batch[start:start + MAX_PARAMS_PER_BATCH])

    @hook_impl
    def after_node_run(self, node, outputs: dict[str, Any]) -> None:
        run_id = self._child_runs.pop(node.name, None)
        if run_id is None:
            return
        import mlflow

        try:
            numbers: dict[str, float] = {}
            for value in outputs.values():
                if isinstance(value, Mapping):
                    numbers.update(flatten_numbers(value))
            if numbers:
                log_metric_points(run_id, [(key, value, 0) for key, value in numbers.items()])
        finally:
            mlflow.end_run()

    @hook_impl
    def on_node_error(self, node) -> None:
        if self._child_runs.pop(node.name, None) is not None:
            import mlflow

            mlflow.end_run(status="FAILED")


def _flatten_params(data: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten_params(value, name))
        else:
            flat[name] = value
    return flat
