"""The retrieval table + refusal calibration node, and the assistant evaluation's wiring (the three
context modes and the user questions: tests/pipelines/evaluate/test_user_questions.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from kaggle_qa.pipelines.evaluate.retrieval_eval import calibrate_threshold, evaluate_retrieval, gold_ranks, rank_metrics
from kaggle_qa.retrieval import build_index

from ..test_retrieval_and_assistant import CHUNKS

ROWS = [
    {"instruction": "How do I submit my predictions file?", "input": CHUNKS[0]["text"], "task_type": "extractive_qa",
     "output": "Upload a CSV file on the Submit page.", "chunk_id": "a"},
    {"instruction": "True or False: notebooks can use a free GPU accelerator.", "input": CHUNKS[1]["text"],
     "task_type": "true_false", "output": "True. Notebooks can use a free GPU.", "chunk_id": "b"},
    {"instruction": "Can non-members view a pending organization profile?", "input": CHUNKS[2]["text"],
     "task_type": "yes_no", "output": "No. Non-members cannot view it.", "chunk_id": "c"},
]


@pytest.fixture(scope="module")
def params(project_root):
    conf = project_root / "conf/base"
    return {
        "retrieval": yaml.safe_load((conf / "parameters_ingestion.yml").read_text())["retrieval"],
        "evaluate": yaml.safe_load((conf / "parameters_evaluate.yml").read_text())["evaluate"],
        "context_modes": yaml.safe_load((conf / "parameters_assistant.yml").read_text())["context_modes"],
    }


@pytest.fixture(scope="module")
def index():
    return build_index(CHUNKS)


def test_rank_metrics_and_calibration_by_hand():
    rankings = [np.array([2, 0, 1]), np.array([1, 2, 0]), np.array([0, 1, 2])]
    ranks = gold_ranks(rankings, gold=[0, 0, 0])
    assert ranks.tolist() == [2, 3, 1]
    metrics = rank_metrics(ranks)
    assert metrics["hit@1"] == pytest.approx(1 / 3) and metrics["hit@3"] == 1.0
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    best = calibrate_threshold(np.array([0.5, 0.6, 0.7, 0.2]), np.array([0.1, 0.15, 0.3]))
    assert best["threshold"] == pytest.approx(0.4) and best["off_topic_refused"] == 1.0
    assert best["in_domain_answered"] == 0.75


def test_retrieval_table_over_a_test_set(index, params, project_root):
    off_topic = json.loads((project_root / "data/01_raw/off_topic_questions.json").read_text())
    rows = [dict(row, instruction=f"{row['instruction']} ({n})") for n, row in enumerate(ROWS * 4)]  # both parts
    result, markdown = evaluate_retrieval(index, rows, off_topic, params["retrieval"], params["evaluate"])
    assert set(result["methods"]) == {"dense", "bm25", "hybrid"}
    assert result["methods"]["bm25"]["hit@1"] == 1.0 and result["methods"]["bm25"]["mrr"] == 1.0
    assert result["relevance"]["chosen"]["reported"]["far_refused"] == 1.0
    assert "| bm25 " in markdown and "reported (disjoint)" in markdown


def test_retrieval_table_names_a_row_whose_chunk_is_not_indexed(index, params):
    rows = [*ROWS, {**ROWS[0], "chunk_id": "zzz"}]
    with pytest.raises(ValueError, match="row 3: chunk_id 'zzz' is not in retrieval_index"):
        evaluate_retrieval(index, rows, ["What is the capital of France?"], params["retrieval"], params["evaluate"])


def test_the_evaluate_pipeline_runs_the_assistant_evaluation_into_declared_outputs(project_root):
    from kaggle_qa.pipeline_registry import register_pipelines
    from kaggle_qa.pipelines.evaluate import create_assistant_evaluation_pipeline

    pipeline = create_assistant_evaluation_pipeline()
    assert pipeline.inputs() == {"base_model", "adapter", "qa_v2", "retrieval_index", "off_topic_questions",
                                 "params:retrieval", "params:evaluate", "params:context_modes", "params:domain",
                                 "params:user_questions", "params:refusal_calibration", "user_questions",
                                 "base_answers_cache", "context_modes_base_answers_cache",
                                 "user_questions_base_answers_cache"}
    catalog = {**yaml.safe_load((project_root / "conf/base/catalog_assistant.yml").read_text()),
               **yaml.safe_load((project_root / "conf/base/catalog_evaluate.yml").read_text())}
    assert pipeline.outputs() <= set(catalog)
    assert all(catalog[name]["versioned"] for name in pipeline.outputs() - {"eval_test_set", "eval_settings"})
    cache = catalog["context_modes_base_answers_cache"]
    assert cache["type"] == "kaggle_qa.datasets.evaluate.ResultsByKeyDataset"
    assert cache["filepath"] == catalog["context_modes_base_answers"]["filepath"]
    registered = register_pipelines()
    names = {n.name for n in registered["evaluate"].nodes}
    assert {"evaluate_retrieval", "evaluate_context_modes", "evaluate_user_questions", "build_report"} <= names
    assert len(names) == len(registered["evaluate"].nodes)  # the shared upstream nodes are not doubled
    assert {n.name for n in registered["__default__"].nodes} >= names
