"""clean_pages and doc_chunks are versioned; each synthesis run records which doc_chunks version it read."""

from __future__ import annotations

import yaml
from kedro.io import DataCatalog

from kaggle_qa.pipelines.synthesis.provenance import record_provenance

from .conftest import PROJECT_ROOT

CHUNK = {"chunk_id": "c1", "url": "https://x/docs", "title": "Docs", "heading_path": ["Docs"], "n_words": 4}


def catalog(folder, save_version=None, load_versions=None) -> DataCatalog:
    """The real ingestion + synthesis catalog entries involved, with their files under ``folder``."""
    config = {}
    for name in ("ingestion", "synthesis"):
        config |= yaml.safe_load((PROJECT_ROOT / f"conf/base/catalog_{name}.yml").read_text())
    wanted = ("clean_pages", "doc_chunks", "doc_chunks_versions", "qa_provenance")
    config = {name: config[name] | {"filepath": config[name]["filepath"].replace("${globals:data_root}", str(folder / "data"))} for name in wanted}
    return DataCatalog.from_config(config, save_version=save_version, load_versions=load_versions)


def test_a_second_crawl_keeps_the_first_chunks_and_provenance_names_the_version_read(tmp_path):
    first = [CHUNK | {"text": "Kaggle hosts competitions."}]
    second = [CHUNK | {"text": "Kaggle hosts datasets now."}]
    for version, chunks in (("2026-01-01T00.00.00.000Z", first), ("2026-02-01T00.00.00.000Z", second)):
        saving = catalog(tmp_path, save_version=version)
        saving.save("doc_chunks", chunks)
        saving.save("clean_pages", [{"url": "https://x/docs", "text": chunks[0]["text"]}])
    for name in ("doc_chunks", "clean_pages"):  # nothing overwritten
        assert len(list((tmp_path / f"data/02_intermediate/{name}.json").iterdir())) == 2

    latest = catalog(tmp_path)
    assert latest.load("doc_chunks") == second  # synthesis reads the latest by default
    record = record_provenance(latest.load("doc_chunks"), latest.load("doc_chunks_versions"), [], [], [])
    assert record["doc_chunks"]["version"] == "2026-02-01T00.00.00.000Z" and record["doc_chunks"]["chunks"] == 1

    pinned = catalog(tmp_path, load_versions={"doc_chunks": "2026-01-01T00.00.00.000Z"})
    record = record_provenance(pinned.load("doc_chunks"), pinned.load("doc_chunks_versions"), [{"q": 1}], [], [])
    assert record["doc_chunks"]["version"] == "2026-01-01T00.00.00.000Z"
    assert record["qa"]["qa_v1"]["rows"] == 1

    unsaved = record_provenance([CHUNK | {"text": "Only in memory."}], latest.load("doc_chunks_versions"), [], [], [])
    assert unsaved["doc_chunks"]["version"] is None  # said, not guessed

    saving = catalog(tmp_path, save_version="2026-02-01T00.00.00.001Z")
    saving.save("qa_provenance", record)  # versioned like the qa sets it describes
    assert catalog(tmp_path).load("qa_provenance") == record
