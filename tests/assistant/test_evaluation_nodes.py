"""The retrieval table + threshold calibration and the three-context-mode evaluation nodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from kaggle_qa.pipelines.evaluate.modes import MODES, evaluate_context_modes
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
    result, markdown = evaluate_retrieval(index, ROWS, off_topic, params["retrieval"], params["evaluate"])
    assert set(result["methods"]) == {"dense", "bm25", "hybrid"}
    assert result["methods"]["bm25"]["hit@1"] == 1.0 and result["methods"]["bm25"]["mrr"] == 1.0
    assert result["relevance"]["recommended"]["off_topic_refused"] == 1.0
    assert "| bm25 " in markdown and "Recommended threshold" in markdown


def test_retrieval_table_names_a_row_whose_chunk_is_not_indexed(index, params):
    rows = [*ROWS, {**ROWS[0], "chunk_id": "zzz"}]
    with pytest.raises(ValueError, match="row 3: chunk_id 'zzz' is not in retrieval_index"):
        evaluate_retrieval(index, rows, ["What is the capital of France?"], params["retrieval"], params["evaluate"])


def save_adapter(base_model: str, folder, seed: int) -> str:
    """A LoRA adapter on `base_model` with non-zero weights (so fine-tuned differs from base)."""
    from peft import LoraConfig, get_peft_model

    from kaggle_qa.modeling import load_model

    model = get_peft_model(load_model(base_model, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(seed)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)
    model.save_pretrained(folder)
    from kaggle_qa.modeling import model_identity
    from kaggle_qa.prompting import PROMPT_TEMPLATE_VERSION

    (folder / "base_model.json").write_text(json.dumps(model_identity(base_model)))
    (folder / "training_params.json").write_text(
        json.dumps({"max_length": 256, "prompt_template_version": PROMPT_TEMPLATE_VERSION})
    )
    return str(folder)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_gemma_path, tmp_path_factory):
    return save_adapter(tiny_gemma_path, tmp_path_factory.mktemp("adapter"), seed=0)


def test_three_context_modes_for_base_and_fine_tuned(tiny_gemma_path, tiny_adapter, index, params):
    context_modes = params["context_modes"] | {"limit": 2, "max_new_tokens": 3}
    evaluate = params["evaluate"] | {"batch_size": 2}
    summary, markdown, base_answers = evaluate_context_modes(tiny_gemma_path, tiny_adapter, ROWS, index,
                                                             params["retrieval"], evaluate, context_modes)
    assert summary["questions"] == 2
    assert set(base_answers["modes"]) == set(MODES) and base_answers["key"]
    assert all(summary["base_results"][mode] == {"key": base_answers["modes"][mode]["key"], "reused_from": None}
               for mode in MODES)
    assert "`gold` computed (key" in markdown
    assert summary["retrieval"]["gold_chunk_retrieved"] == 1.0
    assert list(summary["modes"]) == list(MODES)
    for label in ("base", "fine_tuned"):
        losses = [summary["modes"][mode]["metrics"][label]["overall"]["answer_loss"] for mode in MODES]
        assert all(np.isfinite(losses)) and len(set(losses)) == 3  # each mode shows the model something else
        labelled = summary["modes"]["gold"]["metrics"][label]["true_false+yes_no"]
        assert labelled["n"] == 1 and labelled["loglikelihood_accuracy"] in (0.0, 1.0)
        low, high = summary["modes"]["gold"]["intervals"][label]["overall"]["answer_loss"]
        assert low <= summary["modes"]["gold"]["metrics"][label]["overall"]["answer_loss"] <= high
    gold = summary["modes"]["gold"]["metrics"]
    assert gold["base"]["overall"]["answer_loss"] != gold["fine_tuned"]["overall"]["answer_loss"]
    first_cells = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ")]
    assert first_cells.count("base") == 3 and first_cells.count("fine_tuned") == 3
    assert first_cells.count("base → fine-tuned") == 3


def test_the_evaluate_pipeline_runs_the_assistant_evaluation_into_declared_outputs(project_root):
    from kaggle_qa.pipeline_registry import register_pipelines
    from kaggle_qa.pipelines.evaluate import create_assistant_evaluation_pipeline

    pipeline = create_assistant_evaluation_pipeline()
    assert pipeline.inputs() == {"base_model", "adapter", "qa_v2", "retrieval_index", "off_topic_questions",
                                 "params:retrieval", "params:evaluate", "params:context_modes",
                                 "context_modes_base_answers_cache"}
    catalog = yaml.safe_load((project_root / "conf/base/catalog_assistant.yml").read_text())
    assert pipeline.outputs() <= set(catalog)
    assert all(catalog[name]["versioned"] for name in pipeline.outputs())
    cache = catalog["context_modes_base_answers_cache"]
    assert cache["type"] == "kaggle_qa.datasets.evaluate.ResultsByKeyDataset"
    assert cache["filepath"] == catalog["context_modes_base_answers"]["filepath"]
    registered = register_pipelines()
    names = {n.name for n in registered["evaluate"].nodes}
    assert {"evaluate_retrieval", "evaluate_context_modes", "build_report"} <= names
    assert {n.name for n in registered["__default__"].nodes} >= names


class ModeRuns:
    """Runs the context-modes node as the pipeline does: `context_modes_base_answers` saved as a
    new version after each run, `context_modes_base_answers_cache` read before it; counts which
    models are loaded (None: the base model)."""

    def __init__(self, folder, base_model, index, params, monkeypatch):
        from kaggle_qa.pipelines.evaluate import modes

        self.path = str(folder / "context_modes_base_answers.json")
        self.base_model, self.index, self.params, self.loaded = base_model, index, params, []
        real_load = modes.load_answer_model

        def recording_load(base_model, adapter, *args, **kwargs):
            self.loaded.append(adapter)
            return real_load(base_model, adapter, *args, **kwargs)

        monkeypatch.setattr(modes, "load_answer_model", recording_load)

    def __call__(self, adapter, retrieval=None, evaluate=None, context_modes=None):
        from kedro.io.core import Version, generate_timestamp
        from kedro_datasets.json import JSONDataset

        from kaggle_qa.datasets.evaluate import ResultsByKeyDataset

        self.loaded.clear()
        cache = ResultsByKeyDataset(self.path).load()
        summary, markdown, base_answers = evaluate_context_modes(
            self.base_model, adapter, ROWS, self.index, self.params["retrieval"] | (retrieval or {}),
            self.params["evaluate"] | {"batch_size": 2} | (evaluate or {}),
            self.params["context_modes"] | {"limit": 2, "max_new_tokens": 3} | (context_modes or {}), cache)
        JSONDataset(filepath=self.path, version=Version(None, generate_timestamp())).save(base_answers)
        return summary, markdown


def _base(summary: dict, mode: str) -> tuple:
    return summary["answers"][mode]["base"], summary["modes"][mode]["metrics"]["base"]


def test_a_new_adapter_reuses_the_base_results_of_every_context_mode(tiny_gemma_path, tiny_adapter, index, params,
                                                                     tmp_path, monkeypatch, caplog):
    run = ModeRuns(tmp_path, tiny_gemma_path, index, params, monkeypatch)
    first, _ = run(tiny_adapter)
    assert run.loaded == [None, tiny_adapter]
    assert all(first["base_results"][mode]["reused_from"] is None for mode in MODES)
    other = save_adapter(tiny_gemma_path, tmp_path / "other_adapter", seed=7)
    with caplog.at_level("INFO"):
        second, markdown = run(other)
    assert run.loaded == [other]  # the base model is not loaded at all
    for mode in MODES:
        assert second["base_results"][mode]["key"] == first["base_results"][mode]["key"]
        assert second["base_results"][mode]["reused_from"]
        assert _base(second, mode) == _base(first, mode)
        assert second["seconds"][mode]["base"] == first["seconds"][mode]["base"]
    assert second["answers"]["gold"]["fine_tuned"] != first["answers"]["gold"]["fine_tuned"]
    assert "base answers reused from context_modes_base_answers version" in caplog.text
    assert "the base model is not run" in caplog.text
    assert "`gold` **reused** from `context_modes_base_answers` version" in markdown
    assert "the base model was not run" in markdown
    # a third run reuses the second run's saved copy (each run saves every mode's base results)
    third, _ = run(other)
    assert run.loaded == [other] and all(third["base_results"][mode]["reused_from"] for mode in MODES)


def test_a_changed_setting_recomputes_the_context_modes_base_results(tiny_gemma_path, tiny_adapter, index, params,
                                                                    tmp_path, monkeypatch):
    run = ModeRuns(tmp_path, tiny_gemma_path, index, params, monkeypatch)
    first, _ = run(tiny_adapter)
    # other retrieved contexts: only the retrieved mode's base results are recomputed
    fewer, markdown = run(tiny_adapter, retrieval={"top_k": 1})
    assert run.loaded == [None, tiny_adapter]
    assert fewer["base_results"]["retrieved"]["reused_from"] is None
    assert fewer["base_results"]["retrieved"]["key"] != first["base_results"]["retrieved"]["key"]
    assert fewer["base_results"]["gold"]["reused_from"] and fewer["base_results"]["none"]["reused_from"]
    assert "`retrieved` computed (key" in markdown and "the base model was not run" not in markdown
    # another max_new_tokens: every mode recomputed
    longer, _ = run(tiny_adapter, context_modes={"max_new_tokens": 4})
    assert run.loaded == [None, tiny_adapter]
    assert all(longer["base_results"][mode]["reused_from"] is None for mode in MODES)
    assert all(longer["base_results"][mode]["key"] != first["base_results"][mode]["key"] for mode in MODES)
    # evaluate.reuse_base_results: false recomputes although the key matches
    forced, _ = run(tiny_adapter, evaluate={"reuse_base_results": False})
    assert run.loaded == [None, tiny_adapter]
    assert all(forced["base_results"][mode] == {"key": first["base_results"][mode]["key"], "reused_from": None}
               for mode in MODES)
    assert all(_base(forced, mode) == _base(first, mode) for mode in MODES)  # recomputed: the same results
