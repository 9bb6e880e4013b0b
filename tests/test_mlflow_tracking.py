"""MLflow tracking (kedro-mlflow + kaggle_qa.hooks): real `kedro run`s of the train pipeline and of the
sweep on a tiny random Gemma 3 log into a temporary SQLite store; MlflowClient reads them back and
compares them with the files the versioned catalog wrote. Also the helpers of kaggle_qa.tracking."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from kaggle_qa.tracking import (
    absolute_tracking_uri,
    active_run_id,
    child_env,
    flatten_numbers,
    log_metrics,
    step_series,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "kaggle_qa"  # conf/base/mlflow.yml
SWEEP_NODES = ["build_sweep_examples", "sweep.exp_1.train_experiment", "sweep.exp_5.train_experiment"]

CONTEXT = "Kaggle Notebooks run in the browser. A session stops after 12 hours of execution time."
BASE_ROWS = [
    {"input": CONTEXT, "instruction": "True or False: a notebook session can run for 12 hours.",
     "output": "True.", "task_type": "true_false"},
    {"input": CONTEXT, "instruction": "Do Kaggle Notebooks run in the browser?",
     "output": "Yes, they run in the browser.", "task_type": "yes_no"},
    {"input": CONTEXT, "instruction": "How long can a session run?",
     "output": "Up to 12 hours of execution time.", "task_type": "extractive_qa"},
]
ROWS = [dict(row, chunk_id=f"chunk-{n}") for n in range(3) for row in BASE_ROWS]

# CPU-fast settings over conf/base (parameters soft-merge: only these keys change)
TINY_PARAMS = {
    "train": {
        "max_length": 96, "compute_dtype": "float32", "quantization": None,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "split": {"validation_share": 0.34, "validation_max_rows": 3},
        "batch_size": 2, "gradient_accumulation_steps": 1, "epochs": 1, "max_steps": 3,
        "time_budget_s": None, "eval_every_steps": 1, "eval_batch_size": 4, "train_fit_examples": 2,
        "label_token_weight": 1.0,
    },
    "sweep": {"common": {"max_train_examples": 4, "max_length": 96, "max_steps": 1, "eval_every_steps": 1,
                         "checkpoint_every_steps": 1, "epochs": 1},
              "experiments": {"exp_5": {"batch_size": 2, "gradient_accumulation_steps": 1}}},
}


def tiny_environment(tmp_path: Path, tiny_gemma_path: str) -> Path:
    """conf/base copied + an environment `tiny` whose catalog writes under tmp_path."""
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf" / "base", conf / "base")
    (conf / "tiny").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa_v3.json").write_text(json.dumps(ROWS))
    catalog = {
        "qa_v3": {"type": "json.JSONDataset", "filepath": str(data / "qa_v3.json")},
        "base_model": {"type": "kaggle_qa.datasets.BaseModelDataset", "source": tiny_gemma_path},
        "adapter": {"type": "kaggle_qa.datasets.FolderDataset", "path": str(data / "adapter"), "versioned": True},
        "train_metrics": {"type": "json.JSONDataset", "filepath": str(data / "train_metrics.json"), "versioned": True},
        "learning_curves": {"type": "matplotlib.MatplotlibDataset", "filepath": str(data / "learning_curves.png"),
                            "versioned": True},
        "qa_heldout": {"type": "kaggle_qa.datasets.QAJSONDataset", "filepath": str(data / "qa_heldout.json"),
                       "versioned": True},
        "sweep_table": {"type": "kaggle_qa.datasets.train.SweepTableDataset", "filepath": str(data / "sweep_table")},
    }
    from kaggle_qa.retrieval import build_index

    chunks = {row["chunk_id"]: {"chunk_id": row["chunk_id"], "url": f"https://docs.test/{row['chunk_id']}", "title": "",
                                "heading_path": [], "text": row["input"]} for row in ROWS}
    with open(data / "retrieval_index.pkl", "wb") as handle:
        pickle.dump(build_index(list(chunks.values())), handle)
    catalog["retrieval_index"] = {"type": "pickle.PickleDataset", "filepath": str(data / "retrieval_index.pkl")}
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    (conf / "tiny" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    (conf / "tiny" / "parameters.yml").write_text(yaml.safe_dump(params))
    return conf


KEDRO_RUNS = """
import json, sys
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
project, conf, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
bootstrap_project(project)
for run in runs:
    with KedroSession.create(project_path=project, env="tiny", conf_source=conf) as session:
        session.run(**run)
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_gemma_path):
    """Two `kedro run`s (train; three nodes of the sweep) into a fresh SQLite store, in a child process
    (as `kedro run` runs: its own MLflow state, the store chosen by MLFLOW_TRACKING_URI)."""
    from mlflow import MlflowClient

    tmp_path = tmp_path_factory.mktemp("mlflow_tracking")
    conf = tiny_environment(tmp_path, tiny_gemma_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    # artifacts beside the store, not in the project's ./mlruns
    client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "mlruns").as_uri())
    runs = [{"pipeline_names": ["train"]}, {"pipeline_names": ["sweep"], "node_names": SWEEP_NODES}]
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "KEDRO_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", KEDRO_RUNS, str(PROJECT_ROOT), str(conf), json.dumps(runs)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (tmp_path / "kedro_runs.log").write_text(done.stdout + done.stderr)
    return {"client": client, "uri": uri, "data": tmp_path / "data", "tmp": tmp_path}


def _runs(client, **filters):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], **filters)


def _latest_version(folder: Path) -> Path:
    (version,) = sorted(folder.iterdir())
    return version


def test_one_run_per_kedro_run_with_params_metrics_curves_and_adapter(tracked):
    client = tracked["client"]
    top = _runs(client, filter_string="tags.mlflow.runName = 'train'")
    assert len(top) == 1 and top[0].info.status == "FINISHED"
    run = top[0]
    # the versioned catalog is the source of truth: compare with what it wrote
    saved = json.loads((_latest_version(tracked["data"] / "train_metrics.json") / "train_metrics.json").read_text())
    assert run.data.params["train.lora.r"] == "4" and run.data.params["train.max_length"] == "96"
    assert run.data.params["train.optimizer"]  # from conf/base, flattened
    assert run.data.metrics["train.best_val_loss"] == pytest.approx(saved["best_val_loss"])
    assert run.data.metrics["train.base_val_loss"] == pytest.approx(saved["base_val_loss"])
    assert run.data.metrics["train.split.validation_rows"] == saved["split"]["validation_rows"]
    for field in ("val_loss", "train_loss"):
        logged = client.get_metric_history(run.info.run_id, field)
        expected = [(h["step"], h[field]) for h in saved["history"] if h[field] is not None]
        logged = sorted((m.step, m.value) for m in logged)
        assert [step for step, _ in logged] == [step for step, _ in expected], field
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected]), field
    assert len(expected) >= 3  # a curve, not a point
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert artifacts == {"train/learning_curves.png", "train/train_metrics.json"}
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/training_params.json"} <= adapter
    local = Path(client.download_artifacts(run.info.run_id, "train/learning_curves.png", str(tracked["tmp"] / "dl")))
    curves = _latest_version(tracked["data"] / "learning_curves.png") / "learning_curves.png"
    assert local.read_bytes() == curves.read_bytes() and curves.read_bytes().startswith(b"\x89PNG")
    assert run.data.tags["kedro_command"] == "kedro run --pipeline=train"  # the next run did not log into it


def test_sweep_experiments_are_child_runs_side_by_side(tracked):
    client = tracked["client"]
    (parent,) = _runs(client, filter_string="tags.mlflow.runName = 'sweep'")
    children = _runs(client, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {child.info.run_name: child for child in children}
    assert set(by_name) == {"exp_1", "exp_5"} and all(c.info.status == "FINISHED" for c in children)
    # the experiments' own settings under the same names, so the compare view lines them up
    assert by_name["exp_1"].data.params["lora.r"] == "256" and by_name["exp_5"].data.params["lora.r"] == "128"
    assert by_name["exp_5"].data.params["batch_size"] == "2"
    for child in children:
        assert {"train_loss", "test_loss", "base_test_loss", "steps"} <= set(child.data.metrics)
        assert child.data.metrics["test_loss"] > 0
    # the parent holds the sweep-wide parameters, the children nothing but their own
    assert parent.data.params["sweep.common.max_steps"] == "1" and "train.lora.r" in parent.data.params
    assert "train.lora.r" not in by_name["exp_1"].data.params


def test_tracking_helpers_log_into_a_given_run_from_a_child_process(tracked, tmp_path, monkeypatch):
    """What a distributed train node does: pass child_env() to its ranks; rank 0 logs, rank 1 does not."""
    import mlflow
    from mlflow import MlflowClient

    client = tracked["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    mlflow.set_tracking_uri(tracked["uri"])
    try:
        with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="parent") as run:
            assert active_run_id() == run.info.run_id
            env = child_env()
            assert env["MLFLOW_RUN_ID"] == run.info.run_id and env["MLFLOW_TRACKING_URI"] == tracked["uri"]
            script = ("import os\nfrom kaggle_qa.tracking import log_metrics\n"
                      "print(log_metrics({'rank': {'loss': 0.5 + int(os.environ['RANK'])}}, step=7))")
            done = subprocess.run([sys.executable, "-c", script], env=os.environ | env | {"RANK": "0"},
                                  capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            assert done.stdout.split()[-1] == "1"
            monkeypatch.setenv("RANK", "1")  # another rank logs nothing
            assert log_metrics({"rank": {"loss": 1.5}}, step=7, run_id=run.info.run_id) == 0
        history = MlflowClient(tracked["uri"]).get_metric_history(run.info.run_id, "rank.loss")
        assert [(m.step, m.value) for m in history] == [(7, 0.5)]
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
    finally:
        mlflow.set_tracking_uri(None)


def test_flatten_numbers_and_step_series():
    data = {"loss": 0.5, "ok": True, "name": "x", "nested": {"a": 1, "b": None, "c": [1, 2], "bad key→": 2.0},
            "nan": float("nan")}
    assert flatten_numbers(data, "p") == {"p.loss": 0.5, "p.nested.a": 1.0, "p.nested.bad key_": 2.0}
    history = [{"step": 0, "train_loss": None, "val_loss": 2.0}, {"step": 3, "train_loss": 1.5, "val_loss": 1.0},
               {"val_loss": 9.0}]
    assert step_series(history) == [("val_loss", 2.0, 0), ("train_loss", 1.5, 3), ("val_loss", 1.0, 3)]


def test_relative_sqlite_uri_is_made_absolute_for_child_processes(tmp_path):
    assert absolute_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ.get("MLFLOW_RUN_ID") is None and log_metrics({"x": 1.0}) == 0  # no run: nothing logged


@pytest.mark.slow
def test_mlflow_ui_on_127_0_0_1_lists_the_runs_in_headless_chromium(tracked, tmp_path):
    """What `make mlflow` starts (`kedro mlflow ui`, settings from conf/base/mlflow.yml) shows the runs."""
    from tests.conftest import skip_unless_ci_has
    from tests.test_viz_e2e import free_port, process_group, rendered_dom

    chromium = shutil.which("chromium")
    skip_unless_ci_has(chromium is not None,
                       "Debian `chromium` is not installed (.ci/run installs it: apt-get install -y chromium)")
    client = tracked["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    top = {run.info.run_name: run.info.run_id for run in _runs(client) if run.info.run_name in ("train", "sweep")}
    assert len(top) == 2
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"MLFLOW_TRACKING_URI": tracked["uri"], "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_WORKERS": "1",
                        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    log = tmp_path / "ui.log"
    with process_group([str(bin_dir / "kedro"), "mlflow", "ui", "--port", str(port)], log, cwd=PROJECT_ROOT,
                       env=env) as ui:
        deadline = time.monotonic() + 180
        while True:
            if ui.poll() is not None:
                pytest.fail(f"kedro mlflow ui exited with {ui.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the MLflow UI did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        dom = rendered_dom(chromium, f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs",
                           tmp_path, 30000, "the MLflow UI")
        # the learning curves of the train run, served by the same UI
        curves_url = f"http://127.0.0.1:{port}/get-artifact?path=train/learning_curves.png&run_uuid={top['train']}"
        with urllib.request.urlopen(curves_url, timeout=30) as response:
            assert response.read().startswith(b"\x89PNG")
    assert "127.0.0.1" in log.read_text()
    for name, run_id in top.items():  # each run's row: a link to its page, labelled with its name
        link = rf'href="#/experiments/{experiment.experiment_id}/runs/{run_id}"[^>]*>\s*<span[^>]*>{name}</span>'
        assert re.search(link, dom), f"run {name} ({run_id}) not listed"
