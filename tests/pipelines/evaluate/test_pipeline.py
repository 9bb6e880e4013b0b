"""The evaluate pipeline end to end on a tiny Gemma + LoRA adapter, plus inference and bad-input checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.io.core import generate_timestamp
from kedro.runner import SequentialRunner

from kaggle_qa.datasets import FolderDataset, QAJSONDataset
from kaggle_qa.modeling import load_model, load_tokenizer, make_tiny_gemma, model_identity
from kaggle_qa.pipelines.evaluate import create_pipeline
from kaggle_qa.pipelines.evaluate.inference import Evaluator
from kaggle_qa.pipelines.evaluate.judge import judge_answers, parse_score
from kaggle_qa.pipelines.evaluate.nodes import check_adapter_base, prepare_test_set
from kaggle_qa.qa_schema import QARowError
from tests.pipelines.evaluate.rows import ROWS
from tests.pipelines.synthesis.chat_server import ChatServer, Reply



@pytest.fixture(scope="module")
def tiny_adapter(tiny_gemma_path, tmp_path_factory) -> str:
    """A LoRA adapter with random (non-zero) weights on the tiny Gemma, saved as train saves it."""
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_gemma_path, dtype="float32")
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter_src")
    peft_model.save_pretrained(folder)
    (folder / "base_model.json").write_text(json.dumps(model_identity(tiny_gemma_path)))
    (folder / "training_params.json").write_text(json.dumps({"lora_r": 4}))
    return str(folder)


@pytest.fixture()
def params(project_root) -> dict:
    params = yaml.safe_load((project_root / "conf/base/parameters_evaluate.yml").read_text())["evaluate"]
    params.update(batch_size=4, max_new_tokens=6, dtype="float32")
    params["samples"]["n"] = 2
    return params


def catalog_in(folder: Path, project_root: Path, params: dict, base_model: str, adapter: str) -> DataCatalog:
    """The real evaluate catalog (conf/base/catalog_evaluate.yml) with its files under `folder`."""
    config = yaml.safe_load((project_root / "conf/base/catalog_evaluate.yml").read_text())
    for entry in config.values():
        entry["filepath"] = str(folder / entry["filepath"])
    catalog = DataCatalog.from_config(config, save_version=generate_timestamp())
    qa_v2 = QAJSONDataset(str(folder / "qa_v2.json"))
    qa_v2.save(ROWS)
    catalog["qa_v2"] = qa_v2
    catalog["base_model"] = MemoryDataset(base_model, copy_mode="assign")
    adapter_dataset = FolderDataset(str(folder / "adapter"), version=None)
    adapter_dataset.save(adapter)
    catalog["adapter"] = adapter_dataset
    catalog["params:evaluate"] = MemoryDataset(params)
    return catalog


def test_pipeline_writes_predictions_metrics_and_report(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter, monkeypatch):
    import evaluate

    loaded = []
    real_load = evaluate.load

    def recording_load(path, *args, **kwargs):  # a spy that records, then calls the real loader
        loaded.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(evaluate, "load", recording_load)
    from kaggle_qa.metrics import load_metric

    load_metric.cache_clear()
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-judge-secret-42")
    with ChatServer(lambda n, body: '{"score": 4, "reason": "fine"}') as judge:
        params["judge"].update(base_url=judge.base_url, model="judge-test", api_key_env="JUDGE_KEY_FOR_TEST")
        catalog = catalog_in(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter)
        SequentialRunner().run(create_pipeline(), catalog)
    assert judge.count == 2 * len(ROWS) and judge.headers[0]["authorization"] == "Bearer sk-judge-secret-42"
    assert "Candidate answer:" in judge.requests[0]["messages"][0]["content"]

    assert loaded and all(Path(path).is_absolute() and Path(path).is_dir() for path in loaded)
    predictions = catalog.load("predictions")
    assert [p["id"] for p in predictions] == [str(i) for i in range(len(ROWS))]
    assert {"question", "reference", "base_answer", "fine_tuned_answer", "scores"} <= set(predictions[0])
    assert any(p["base_answer"] != p["fine_tuned_answer"] for p in predictions)  # the adapter changes answers
    # a random tiny model never emits EOS: every answer is cut at max_new_tokens and counted
    assert all(p["scores"]["base"]["hit_max_new_tokens"] and p["scores"]["base"]["new_tokens"] == 6 for p in predictions)
    assert {p["scores"]["fine_tuned"]["choice"] for p in predictions if p["task_type"] == "yes_no"} <= {"Yes", "No"}

    metrics = catalog.load("metrics")
    for label in ("base", "fine_tuned"):
        overall = metrics["metrics"][label]["overall"]
        assert overall["n"] == len(ROWS) and overall["hit_max_new_tokens_count"] == len(ROWS)
        assert overall["choice_items"] == 3 and 0 <= overall["loglikelihood_accuracy"] <= 1
        assert overall["answer_loss"] > 0 and overall["sequence_loss"] > 0
        assert set(metrics["metrics"][label]) == {"overall", "true_false", "yes_no", "extractive_qa", "nli"}
        assert metrics["metrics"][label]["true_false"]["choice_items"] == 2
    assert metrics["metrics"]["base"]["overall"]["answer_loss"] != metrics["metrics"]["fine_tuned"]["overall"]["answer_loss"]

    assert metrics["metrics"]["fine_tuned"]["overall"]["judge_score"] == 4.0
    report = catalog.load("eval_report")
    assert "LLM judge score (1-5)" in report
    for saved in tmp_path.rglob("*"):
        assert not saved.is_file() or b"sk-judge-secret-42" not in saved.read_bytes()  # the key is never saved
    assert "## Overall" in report and "data:image/png;base64," in report
    assert "What is the main objective of Playground competitions on Kaggle?" in report  # paper question first
    assert "| 1* |" in report
    chart_files = list((tmp_path / "data/08_reporting/eval_chart.png").rglob("*.png"))
    assert chart_files and chart_files[0].read_bytes()[:4] == b"\x89PNG"


def test_a_bad_test_row_fails_with_file_and_row_index(tmp_path):
    path = tmp_path / "my_test.json"
    path.write_text(json.dumps([ROWS[0], {"input": "x", "instruction": "q"}]))
    with pytest.raises(DatasetError, match=r"my_test\.json: row 1 is missing key 'output'"):
        QAJSONDataset(str(path)).load()
    path.write_text(json.dumps([ROWS[0], {"input": "x", "instruction": "q", "output": 3}]))
    with pytest.raises(DatasetError, match=r"my_test\.json: row 1 key 'output' holds int"):
        QAJSONDataset(str(path)).load()
    with pytest.raises(QARowError, match=r"my_eval_set: row 0 is missing key 'input'"):
        prepare_test_set([{"output": "x"}], {"test_set_name": "my_eval_set"})


def test_an_empty_test_set_fails_clearly():
    with pytest.raises(ValueError, match="qa_v2 is empty: there is nothing to evaluate"):
        prepare_test_set([], {"test_set_name": "qa_v2"})


def test_an_adapter_from_another_base_model_is_refused(tiny_gemma_path, tiny_adapter, embedded_gemma_path, tmp_path):
    assert check_adapter_base(tiny_gemma_path, tiny_adapter)["config_sha256"]
    other = make_tiny_gemma(embedded_gemma_path, tmp_path / "other_tiny", hidden_size=48)
    with pytest.raises(ValueError, match=r"trained on base model .*tiny_gemma.* but the base model given is .*other_tiny"):
        check_adapter_base(str(other), tiny_adapter)


def test_the_catalog_declares_the_versioned_outputs(project_root):
    config = yaml.safe_load((project_root / "conf/base/catalog_evaluate.yml").read_text())
    assert {"predictions", "metrics", "eval_report", "eval_chart"} == set(config)
    assert all(entry["versioned"] for entry in config.values())
    assert create_pipeline().inputs() == {"base_model", "adapter", "qa_v2", "params:evaluate"}


def test_judge_scores_and_unreadable_or_failed_replies(monkeypatch):
    assert parse_score('{"score": 5, "reason": "ok"}') == 5
    assert parse_score("I would give it a 2.") == 2
    assert parse_score('{"score": 9}') is None and parse_score("no idea") is None
    replies = ['{"score": 3}', "no idea", Reply(status=400, content="bad request")]
    with ChatServer(lambda n, body: replies[n]) as server:
        settings = dict(base_url=server.base_url, model="m", api_key_env="UNSET_KEY_VAR", concurrency=1,
                        timeout_s=10, max_retries=0, max_tokens=20)
        scores = judge_answers(["a", "b", "c"], ROWS[:3], settings, "test")
    assert scores == [3, None, None]


def test_own_test_file_is_one_catalog_entry_in_an_env(project_root, tmp_path, monkeypatch):
    """`conf/<env>/catalog_evaluate.yml` with one `qa_v2` entry swaps the test set (`--env <env>`)."""
    import shutil

    from kedro.config import OmegaConfigLoader

    from kaggle_qa.settings import CONFIG_LOADER_ARGS

    shutil.copytree(project_root / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "mytest").mkdir()
    (tmp_path / "conf" / "mytest" / "catalog_evaluate.yml").write_text(
        "qa_v2:\n  type: kaggle_qa.datasets.QAJSONDataset\n  filepath: my_questions.json\n"
    )
    (tmp_path / "my_questions.json").write_text(json.dumps(ROWS[:2]))
    monkeypatch.chdir(tmp_path)
    loader = OmegaConfigLoader(str(tmp_path / "conf"), **(CONFIG_LOADER_ARGS | {"default_run_env": "mytest"}))
    catalog = DataCatalog.from_config(loader["catalog"], loader["credentials"])
    assert catalog.load("qa_v2") == ROWS[:2]
