"""The evaluate pipeline end to end on a tiny Gemma + LoRA adapter, plus inference and bad-input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.io.core import generate_timestamp
from kedro.runner import SequentialRunner

from kaggle_qa.datasets import FolderDataset, QAJSONDataset
from kaggle_qa.modeling import load_model, make_tiny_gemma, model_identity, resolve_dtype
from kaggle_qa.pipelines.evaluate import create_pipeline
from kaggle_qa.pipelines.evaluate.judge import judge_answers, parse_score
from kaggle_qa.pipelines.evaluate.nodes import (
    _checked, check_adapter_base, first_sentence, load_base_model, load_fine_tuned_model, prepare_test_set,
    read_adapter_settings, score_predictions,
)
from kaggle_qa.prompting import PROMPT_TEMPLATE_VERSION
from kaggle_qa.qa_schema import QARowError
from tests.pipelines.evaluate.rows import ROWS
from tests.pipelines.synthesis.chat_server import ChatServer, Reply



CROSS_TEACHER = [  # published rows carry no chunk_id or task_type: chunks come from the context
    {key: row[key] for key in ("input", "instruction", "output")} for row in ROWS
] + [{"input": "Kernels run code.", "instruction": "True or False: kernels run code.", "output": "True."}]


def save_adapter(base_model: str, folder: Path, seed: int, **training_params) -> str:
    """A LoRA adapter with random (non-zero) weights on `base_model`, saved as train saves it."""
    from peft import LoraConfig, get_peft_model

    model = load_model(base_model, dtype="float32")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(folder)
    (folder / "base_model.json").write_text(json.dumps(model_identity(base_model)))
    recorded = {"lora_r": 4, "max_length": 256, "prompt_template_version": PROMPT_TEMPLATE_VERSION} | training_params
    (folder / "training_params.json").write_text(json.dumps(recorded))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_gemma_path, tmp_path_factory) -> str:
    return save_adapter(tiny_gemma_path, tmp_path_factory.mktemp("adapter_src"), seed=1, strength_chosen=0.5)


@pytest.fixture()
def params(project_root) -> dict:
    params = yaml.safe_load((project_root / "conf/base/parameters_evaluate.yml").read_text())["evaluate"]
    params.update(batch_size=4, max_new_tokens=6, dtype="float32")
    params["cross_teacher"]["limit"] = 4
    params["bootstrap"]["resamples"] = 200
    params["samples"]["n"] = 2
    return params


def catalog_in(folder: Path, project_root: Path, params: dict, base_model: str, adapter: str) -> DataCatalog:
    """The real evaluate catalog (conf/base/catalog_evaluate.yml) with its files under `folder`."""
    config = yaml.safe_load((project_root / "conf/base/catalog_evaluate.yml").read_text())
    for entry in config.values():
        if entry.get("filepath"):  # an entry with no file (e.g. user_questions: null) stays so
            entry["filepath"] = str(folder / entry["filepath"].replace("${globals:data_root}", "data"))
    cross_teacher = Path(config["qa_cross_teacher"]["filepath"])
    cross_teacher.parent.mkdir(parents=True, exist_ok=True)
    cross_teacher.write_text(json.dumps(CROSS_TEACHER))
    catalog = DataCatalog.from_config(config, save_version=generate_timestamp())
    qa_v2 = QAJSONDataset(str(folder / "qa_v2.json"))
    qa_v2.save(ROWS)
    catalog["qa_v2"] = qa_v2
    catalog["base_model"] = MemoryDataset(base_model, copy_mode="assign")
    adapter_dataset = FolderDataset(str(folder / "adapter"), version=None)
    adapter_dataset.save(adapter)
    catalog["adapter"] = adapter_dataset
    catalog["params:evaluate"] = MemoryDataset(params)
    catalog["params:evaluate.cross_teacher"] = MemoryDataset(params["cross_teacher"])
    return catalog


def test_pipeline_writes_answers_predictions_metrics_and_report(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter, monkeypatch):
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
    assert judge.count == 2 * len(ROWS) + 2 * 4 and judge.headers[0]["authorization"] == "Bearer sk-judge-secret-42"
    assert "Candidate answer:" in judge.requests[0]["messages"][0]["content"]

    assert loaded and all(Path(path).is_absolute() and Path(path).is_dir() for path in loaded)
    raw = catalog.load("raw_answers")
    assert raw["settings"]["max_length"] == 256 and raw["settings"]["prompt_template_version"] == PROMPT_TEMPLATE_VERSION
    assert raw["base_results"]["reused_from"] is None
    predictions = catalog.load("predictions")
    assert [p["id"] for p in predictions] == [str(i) for i in range(len(ROWS))]
    assert [p["fine_tuned_answer"] for p in predictions] == [r["answer"] for r in raw["models"]["fine_tuned"]["rows"]]
    assert {"question", "reference", "base_answer", "fine_tuned_answer", "scores", "chunk"} <= set(predictions[0])
    assert any(p["base_answer"] != p["fine_tuned_answer"] for p in predictions)  # the adapter changes answers
    # a random tiny model never emits EOS: every answer is cut at max_new_tokens and counted
    assert all(p["scores"]["base"]["hit_max_new_tokens"] and p["scores"]["base"]["new_tokens"] == 6 for p in predictions)
    assert {p["scores"]["fine_tuned"]["choice"] for p in predictions if p["task_type"] == "yes_no"} <= {"Yes", "No"}
    assert {p["scores"]["base"]["choice"] for p in predictions if p["task_type"] == "nli"} <= {"Entailment", "Contradiction", "Neutral"}
    assert all(p["scores"]["base"]["reference_is_candidate"] for p in predictions if "choice" in p["scores"]["base"])

    metrics = catalog.load("metrics")
    assert metrics["bootstrap"]["unit"] == "chunk" and metrics["run"]["whole_sequence_loss"] is False
    for label in ("base", "fine_tuned"):
        overall = metrics["metrics"][label]["overall"]
        assert overall["n"] == len(ROWS) and overall["chunks"] == 4 and overall["hit_max_new_tokens_count"] == len(ROWS)
        assert overall["choice_items"] == 4 and 0 <= overall["loglikelihood_accuracy"] <= 1  # 2 true/false, 1 yes/no, 1 NLI
        assert overall["answer_loss"] > 0 and "sequence_loss" not in overall  # whole-sequence loss is off by default
        assert set(metrics["metrics"][label]) == {"overall", "true_false", "yes_no", "extractive_qa", "nli", "true_false+yes_no"}
        assert metrics["metrics"][label]["true_false"]["choice_items"] == 2 and metrics["metrics"][label]["nli"]["choice_items"] == 1
        low, high = metrics["intervals"][label]["overall"]["rougeL"]
        assert low <= overall["rougeL"] <= high
    change = metrics["changes"]["base→fine_tuned"]["overall"]["answer_loss"]
    assert change["delta"] != 0 and 0 < change["p_value"] <= 1

    # the headline as data: three models, the best constant beside label accuracy, Holm-adjusted stars
    head = {(row["group"], row["metric"]): row for row in metrics["headline"]["rows"]}
    assert set(head[("overall", "rougeL")]["values"]) == {"base", "base_first_sentence", "fine_tuned"}
    assert "p_holm" in head[("overall", "rougeL")]["changes"]["base→fine_tuned"]
    assert "base_first_sentence→fine_tuned" not in head[("overall", "answer_loss")]["changes"]  # same as base's
    # labels here: true/false True + False, yes/no No only: "always False/No" is right on 2 of the 3 gold labels
    constant = head[("true_false+yes_no", "balanced_accuracy")]["best_constant"]
    assert constant["answer"] == "always False/No" and constant["value"] == pytest.approx(2 / 3)
    assert metrics["headline"]["family_size"] == sum(len(row["changes"]) for row in metrics["headline"]["rows"])
    assert metrics["run"]["dtype"] == "float32"  # weights; the matmuls compute in evaluate.dtype resolved
    compute = metrics["run"]["compute_dtype"]
    assert compute == resolve_dtype(catalog.load("params:evaluate")["dtype"])
    assert ("both models in float32 on cpu" if compute == "float32" else
            "both models in float32 weights, bfloat16 matmuls (autocast") in metrics["run"]["numerics"]
    assert all(len(p["base_first_sentence_answer"]) <= len(p["base_answer"]) for p in predictions)

    cross = catalog.load("cross_teacher_metrics")
    assert cross["metrics"]["base"]["overall"]["n"] == 4 and not cross["skipped"]
    assert cross["metrics"]["fine_tuned"]["overall"]["judge_score"] == 4.0
    report = catalog.load("eval_report")
    assert "LLM judge score (1-5)" in report
    for saved in tmp_path.rglob("*"):
        assert not saved.is_file() or b"sk-judge-secret-42" not in saved.read_bytes()  # the key is never saved
    for section in ("side by side", "## Our test set (qa_v2)", "## Cross-teacher set", "Predicted labels (log-lik.)",
                    "Whole-sequence loss (the paper's, an LM head over every prompt position): **off**",
                    "Base results: computed", "data:image/png;base64,", "## Headline", "Base, first sentence",
                    "Numerics: **both models in float32 on cpu", "Best constant answer"):
        assert section in report, section
    assert "What is the main objective of Playground competitions on Kaggle?" in report  # paper question first
    assert "| 1* |" in report
    assert "at strength **0.5**" in report  # the adapter strength train chose (training_params.json), named in the run line
    chart_files = list((tmp_path / "data/08_reporting/eval_chart.png").rglob("*.png"))
    assert chart_files and chart_files[0].read_bytes()[:4] == b"\x89PNG"


def test_a_new_adapter_reuses_the_saved_base_results(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter, caplog):
    """Second run, another adapter: the base model is not run again; its results come from base_answers."""
    params["cross_teacher"]["limit"] = 0  # skip the cross-teacher set here
    first = catalog_in(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter)
    SequentialRunner().run(create_pipeline(), first)
    raw_first = first.load("raw_answers")  # the latest version: load it before the second run saves another
    other = save_adapter(tiny_gemma_path, tmp_path / "other_adapter", seed=7)
    second = catalog_in(tmp_path, project_root, params, tiny_gemma_path, other)
    with caplog.at_level("INFO"):
        SequentialRunner().run(create_pipeline(), second)
    raw_second = second.load("raw_answers")
    assert raw_second["base_results"]["reused_from"] and raw_second["base_results"]["key"] == raw_first["base_results"]["key"]
    assert raw_second["models"]["base"] == raw_first["models"]["base"]
    assert raw_second["models"]["fine_tuned"] != raw_first["models"]["fine_tuned"]
    assert "Base answers reused from base_answers version" in caplog.text
    assert "**reused** from `base_answers` version" in second.load("eval_report")
    assert second.load("cross_teacher_metrics")["skipped"] and "Not evaluated (its `limit` is 0)" in second.load("eval_report")
    # another inference setting changes the key: the base model runs again
    params["max_new_tokens"] = 5
    third = catalog_in(tmp_path, project_root, params, tiny_gemma_path, other)
    SequentialRunner().run(create_pipeline(), third)
    assert third.load("raw_answers")["base_results"]["reused_from"] is None


def test_a_scoring_failure_keeps_the_answers(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter):
    """Answers are saved (raw_answers) before scoring: a metric that fails costs no inference."""
    params["cross_teacher"]["limit"] = 0
    params["semantic_similarity"]["model_path"] = str(tmp_path / "no_such_encoder")
    catalog = catalog_in(tmp_path, project_root, params, tiny_gemma_path, tiny_adapter)
    with pytest.raises(Exception, match="no_such_encoder"):
        SequentialRunner().run(create_pipeline(), catalog)
    raw = catalog.load("raw_answers")
    assert len(raw["models"]["base"]["rows"]) == len(raw["models"]["fine_tuned"]["rows"]) == len(ROWS)
    assert all(row["answer"] for row in raw["models"]["fine_tuned"]["rows"])
    assert not catalog.exists("predictions")
    # scoring resumes from the saved answers alone, without any model
    params["semantic_similarity"]["model_path"] = None
    test_set = prepare_test_set(ROWS, params)
    predictions = score_predictions(test_set, raw, params)
    assert [p["fine_tuned_answer"] for p in predictions] == [r["answer"] for r in raw["models"]["fine_tuned"]["rows"]]


def test_adapter_settings_come_from_its_training_params(tiny_gemma_path, tmp_path, params):
    good = save_adapter(tiny_gemma_path, tmp_path / "good", seed=1, max_length=384)
    assert read_adapter_settings(tiny_gemma_path, good, params)["max_length"] == 384
    old = save_adapter(tiny_gemma_path, tmp_path / "old", seed=1, prompt_template_version="0")
    with pytest.raises(ValueError, match=r"prompt template version '0' .* this code's template is version '1'"):
        read_adapter_settings(tiny_gemma_path, old, params)
    unknown = save_adapter(tiny_gemma_path, tmp_path / "unknown", seed=1, max_length=None)
    with pytest.raises(ValueError, match=r"training_params.json has no integer max_length"):
        read_adapter_settings(tiny_gemma_path, unknown, params)


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
    outputs = {"base_answers", "raw_answers", "predictions", "metrics"}
    outputs |= {f"cross_teacher_{name}" for name in outputs} | {"eval_report", "eval_chart"}
    assert outputs <= create_pipeline().all_outputs()
    assert all(config[name]["versioned"] for name in outputs)
    assert create_pipeline().inputs() == {
        "base_model", "adapter", "qa_v2", "qa_cross_teacher", "base_answers_cache", "cross_teacher_base_answers_cache",
        "params:evaluate", "params:evaluate.cross_teacher",
    }


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


def test_published_test_env_evaluates_the_cross_teacher_set_alone(project_root, monkeypatch):
    """`--env published-test`: qa_v2 is the paper's published v3, the duplicate cross-teacher section is skipped."""
    from kedro.config import OmegaConfigLoader

    from kaggle_qa.settings import CONFIG_LOADER_ARGS

    monkeypatch.chdir(project_root)
    loader = OmegaConfigLoader(str(project_root / "conf"), **(CONFIG_LOADER_ARGS | {"default_run_env": "published-test"}))
    catalog = DataCatalog.from_config(loader["catalog"], loader["credentials"])
    published = json.loads((project_root / "data/03_primary/published/kaggle_docs_QA_v3.json").read_text())
    assert catalog.load("qa_v2") == published and len(published) == 1663
    params = loader["parameters"]["evaluate"]
    assert params["cross_teacher"]["limit"] == 0 and params["limit"] is None
    assert params["bootstrap"]["resamples"] == 1000  # the rest merges from base
    from kaggle_qa.pipelines.evaluate.nodes import label_choices
    from kaggle_qa.qa_schema import LABEL_CHOICES

    assert params["choices"] is None  # one source of truth: the label words training uses
    assert label_choices(params) == {task: list(words) for task, words in LABEL_CHOICES.items()}
    assert label_choices({"choices": {"true_false": ["True", "False"]}}) == {"true_false": ["True", "False"]}
    assert prepare_test_set(published, params["cross_teacher"]) == []
    assert len(prepare_test_set(published, {"limit": 5, "seed": 0})) == 5


def test_rows_from_chunks_the_adapter_trained_or_validated_on_are_refused(tmp_path, caplog):
    """Model selection and training never see a test row: evaluate drops (and reports) any that slipped in."""
    import json as _json

    from kaggle_qa.pipelines.evaluate.nodes import prepare_test_set

    rows = [{"input": f"context {n}", "instruction": f"Question {n}?", "output": "Yes.", "chunk_id": f"c{n}"}
            for n in range(6)]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "data_split.json").write_text(_json.dumps({"validation_groups": ["c1"], "train_groups": ["c2", "c3"]}))
    with caplog.at_level("WARNING"):
        kept = prepare_test_set(rows, {"test_set_name": "qa_v2"}, str(adapter))
    assert [row["chunk"] for row in kept] == ["c0", "c4", "c5"]
    assert "2 rows come from chunks the adapter" in caplog.text and "1 from its validation chunks" in caplog.text
    assert [row["chunk"] for row in prepare_test_set(rows, {"test_set_name": "qa_v2"}, None)] == [f"c{n}" for n in range(6)]


def test_the_registered_evaluate_pipeline_puts_the_assistant_tables_in_eval_report():
    """`kedro run --pipeline evaluate` runs the assistant evaluation too, and eval_report carries its tables."""
    from kaggle_qa.pipeline_registry import register_pipelines
    from kaggle_qa.pipelines.evaluate.report import build_report

    pipe = register_pipelines()["evaluate"]
    report_node = next(n for n in pipe.nodes if n.name == "build_report")
    assert {"retrieval_table", "context_modes_table"} <= set(report_node.inputs)
    assert {"retrieval_table", "context_modes_table"} <= pipe.all_outputs()
    skipped = {"skipped": True, "metrics": {}, "intervals": {}, "changes": {},
               "definitions": {"groundedness": {"support_threshold": 0.8}, "choices": {"true_false": ["True", "False"]}}}
    text, figure = build_report(skipped, [], skipped, [], {"samples": {"n": 1, "seed": 0}, "paper_table4_questions": []},
                                "## Retrieval: is the gold chunk found?\n\n| method | hit@1 |", "## Three context modes\n\nx")
    assert figure is None
    assert "## Retrieval: is the gold chunk found?" in text and "## Three context modes" in text


def test_base_and_fine_tuned_are_loaded_at_the_same_numerics(tiny_gemma_path, tiny_adapter, params, monkeypatch):
    """Asked for bfloat16 on CPU, both models' weights are float32 (the fine-tuned model's there) and both
    compute their matmuls in bfloat16 (autocast, as training did)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = read_adapter_settings(tiny_gemma_path, tiny_adapter, {**params, "dtype": "bfloat16"})
    assert settings["dtype"] == "float32" and settings["requested_dtype"] == "bfloat16"
    assert settings["compute_dtype"] == "bfloat16"
    assert read_adapter_settings(tiny_gemma_path, tiny_adapter, {**params, "dtype": "float32"})["compute_dtype"] == "float32"
    # `auto` on either CPU path, whichever CPU runs the test: AVX2 computes in float32, AVX512-BF16 in bf16
    for capability, native, compute in (("AVX2", False, "float32"), ("AVX512", True, "bfloat16")):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        auto = read_adapter_settings(tiny_gemma_path, tiny_adapter, {**params, "dtype": "auto"})
        assert (auto["dtype"], auto["compute_dtype"]) == ("float32", compute), capability
    base = load_base_model(tiny_gemma_path, settings)
    tuned = load_fine_tuned_model(tiny_gemma_path, tiny_adapter, settings)
    assert {p.dtype for p in base.parameters()} == {p.dtype for p in tuned.parameters()} == {torch.float32}
    with pytest.raises(RuntimeError, match="same numerics"):  # a model in another dtype is refused
        _checked(base, {**settings, "dtype": "bfloat16"}, "base")


def test_first_sentence_keeps_a_bare_label_with_its_sentence():
    assert first_sentence("Kaggle hosts competitions. It also hosts datasets.") == "Kaggle hosts competitions."
    assert first_sentence("True. Teams can merge. Later they cannot.") == "True. Teams can merge."
    assert first_sentence("No.") == "No." and first_sentence("") == ""
