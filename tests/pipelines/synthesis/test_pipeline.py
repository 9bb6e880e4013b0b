"""The whole synthesis pipeline on hand-written chunks, with both teachers (Kedro runner, in memory)."""

from __future__ import annotations

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from kaggle_qa.datasets import QAJSONDataset
from kaggle_qa.datasets.synthesis import PublishedQADataset, Secret
from kaggle_qa.pipelines.synthesis import create_pipeline
from kaggle_qa.pipelines.synthesis.nodes import split_chunks
from kaggle_qa.qa_schema import validate_rows
from kaggle_qa.retrieval import build_index

from .chat_server import ChatServer

OUTPUTS = ("qa_v1", "qa_v2", "qa_v3", "qa_quarantine", "datasheet", "datasheet_json", "datasheet_plot")


def run_pipeline(chunks, params, project_root, tmp_path, api_key=None) -> dict:
    """Run it; the QA sets go through the real QAJSONDataset (validated save and load)."""
    prompts = {p.stem: p.read_text for p in (project_root / "conf/base/prompts").glob("*.txt")}
    catalog = DataCatalog(
        datasets={
            "doc_chunks": MemoryDataset(chunks),
            "doc_chunks_versions": MemoryDataset({}),  # not from a saved version: provenance says so
            "teacher_prompts": MemoryDataset(prompts, copy_mode="assign"),
            "teacher_api_key": MemoryDataset(api_key, copy_mode="assign"),
            "params:synthesis": MemoryDataset(params),
            "params:domain": MemoryDataset(yaml.safe_load((project_root / "conf/base/parameters.yml").read_text())["domain"]),
            "retrieval_index": MemoryDataset(build_index(chunks), copy_mode="assign"),
            "params:retrieval": MemoryDataset(
                yaml.safe_load((project_root / "conf/base/parameters_ingestion.yml").read_text())["retrieval"]),
            **{
                f"qa_{v}_published": PublishedQADataset(str(project_root / f"data/03_primary/published/kaggle_docs_QA_{v}.json"))
                for v in ("v1", "v3")
            },
            **{name: QAJSONDataset(str(tmp_path / f"{name}.json")) for name in ("qa_v1", "qa_v2", "qa_v3")},
        }
    )
    free = SequentialRunner().run(create_pipeline(), catalog)
    return {name: (free[name] if name in free else catalog[name]).load() for name in OUTPUTS}


def test_offline_run_makes_every_output(chunks, params, project_root, tmp_path):
    out = run_pipeline(chunks, params, project_root, tmp_path)
    for version in ("qa_v1", "qa_v2", "qa_v3"):
        assert out[version], version
        validate_rows(out[version], version)
    split = split_chunks(chunks, params)
    assert {r["chunk_id"] for r in out["qa_v2"]} <= set(split["test"])
    assert {r["chunk_id"] for r in out["qa_v3"]}.isdisjoint(split["test"])  # no leakage
    assert all(record["reason"] and "row" in record for record in out["qa_quarantine"])
    sheet = out["datasheet_json"]
    assert sheet["table1"]["v3"]["instances"] == len(out["qa_v3"])
    assert sheet["table1"]["v2"]["empty_inputs"] == 0
    assert sheet["v2_v3_overlap"]["shared_chunks"] == 0
    assert sheet["v2_v3_overlap"]["identical_questions"] == 0
    assert sheet["v2_v3_overlap"]["near_identical_about_the_same_text"] == 0  # repeated docs text cannot leak
    assert sheet["filters"]["v3"]["kept"] == len(out["qa_v3"])
    bars = out["datasheet_plot"].axes[0].patches
    assert sum(bar.get_height() for bar in bars) == sum(len(out[v]) for v in ("qa_v1", "qa_v2", "qa_v3"))
    assert set(sheet["shortcut_audit"]["versions"]) == {"v1", "v2", "v3", "v1_published", "v3_published"}
    for heading in ("Table 1", "Shortcut audit", "Table 5", "Filters", "overlap", "Sample rows"):
        assert heading in out["datasheet"]
    assert f"| # of instances | {len(out['qa_v1'])} | {len(out['qa_v2'])} | {len(out['qa_v3'])} |" in out["datasheet"]


def test_leakage_switch_lets_v3_use_test_chunks(chunks, params, project_root, tmp_path):
    params["keep_test_chunks_out_of_train"] = False
    out = run_pipeline(chunks, params, project_root, tmp_path)
    assert out["datasheet_json"]["v2_v3_overlap"]["shared_chunks"] > 0


def test_openai_run_and_rerun_from_cache(chunks, params, project_root, tmp_path):
    params["teacher"] = "openai"
    params["openai"] |= {"model": "test-model", "concurrency": 2, "backoff_initial_s": 0.01}
    with ChatServer() as server:
        params["openai"]["base_url"] = server.base_url
        first = run_pipeline(chunks, params, project_root, tmp_path / "first", Secret("sk-test"))
        n_requests = server.count
        second = run_pipeline(chunks, params, project_root, tmp_path / "second", Secret("sk-test"))
    split = split_chunks(chunks, params)
    n_chunks = len(chunks) + len(split["test"]) + len(split["train"])  # v1 all, v2, v3
    assert n_requests == n_chunks and server.count == n_requests
    assert first["qa_v3"] == second["qa_v3"] and first["qa_v3"]
    assert all(r["teacher"] == "openai:test-model" for r in first["qa_v3"])
    teacher = second["datasheet_json"]["teacher"]
    assert teacher["cache_hits"] == n_chunks and teacher["requests"] == 0
    assert "test-model" in second["datasheet"]


def test_unknown_teacher_is_a_clear_error(chunks, params, project_root, tmp_path):
    params["teacher"] = "gemini"
    with pytest.raises(Exception, match="unknown teacher 'gemini'"):
        run_pipeline(chunks, params, project_root, tmp_path)


def test_bad_chunk_names_its_index(chunks, params):
    del chunks[3]["text"]
    with pytest.raises(ValueError, match="chunk 3 has no str 'text'"):
        split_chunks(chunks, params)


def test_repeated_chunk_ids_count_once_and_unusable_chunks_are_quarantined(chunks, params, project_root, tmp_path):
    chunks.append(dict(chunks[0]))  # the same chunk_id twice
    chunks.append(chunks[1] | {"chunk_id": "code", "text": "```\npip install kaggle\n```"})
    chunks.append(chunks[1] | {"chunk_id": "blank", "text": "  "})
    split = split_chunks(chunks, params)
    assert split["repeated_chunk_ids"] == 1
    assert split["unusable"] == {"code": "code-only chunk", "blank": "empty chunk"}
    assert len(set(split["test"])) == len(split["test"]) and set(split["test"]).isdisjoint(split["train"])
    out = run_pipeline(chunks, params, project_root, tmp_path)
    v1_unusable = [r for r in out["qa_quarantine"] if r["version"] == "v1" and "chunk" in r["reason"]]
    assert sorted(r["row"]["chunk_id"] for r in v1_unusable) == ["blank", "code"]
    assert out["datasheet_json"]["chunks"]["unusable"] == {"code-only chunk": 1, "empty chunk": 1}
    assert out["datasheet_json"]["filters"]["v1"]["dropped"]["code-only chunk"] == 1
