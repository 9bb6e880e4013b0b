"""Real crawls over HTTP: the bundled snapshot (twice, through the catalog) and a site that misbehaves."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from kedro.io import DataCatalog
from kedro.io.core import generate_timestamp
from kedro.runner import SequentialRunner

from kaggle_qa.pipelines.ingestion import create_pipeline
from kaggle_qa.pipelines.ingestion.nodes import crawl_docs
from kaggle_qa.pipelines.ingestion.spider import CrawlError

from tests.conftest import skip_unless_ci_has

from .conftest import PROJECT_ROOT, SNAPSHOT, BadSiteHandler

LIVE_ORIGIN = "https://www.kaggle.com"


def catalog_in(folder: Path, params: dict) -> DataCatalog:
    """The real ingestion catalog (conf/base/catalog_ingestion.yml), with its files under ``folder``."""
    config = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_ingestion.yml").read_text())
    for entry in config.values():
        entry["filepath"] = entry["filepath"].replace("${globals:data_root}", str(folder / "data"))
    catalog = DataCatalog.from_config(config, save_version=generate_timestamp())
    catalog["params:ingestion"] = params
    parameters = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text())
    catalog["params:retrieval"] = parameters["retrieval"]
    return catalog


def normalised(text: str) -> str:
    return " ".join(text.split())


def test_snapshot_crawled_twice_through_the_catalog(tmp_path, ingestion_params):
    manifest = json.loads((SNAPSHOT / "snapshot.json").read_text())
    public = {LIVE_ORIGIN + manifest["index"]} | {LIVE_ORIGIN + page["path"] for page in manifest["pages"]}
    private = {LIVE_ORIGIN + path for path in manifest["private_pages"]}

    reports = []
    for run in range(2):  # two crawls in one Python process: no ReactorNotRestartable
        catalog = catalog_in(tmp_path, ingestion_params)
        pipeline = create_pipeline() if run == 0 else create_pipeline().to_nodes("chunk_pages")  # index once
        SequentialRunner().run(pipeline, catalog)
        reports.append(catalog.load("crawl_report"))
        raw_pages = catalog.load("raw_pages")
        urls = [page["url"] for page in raw_pages]
        assert sorted(urls) == sorted(public)  # every public page exactly once
        assert not private & set(urls)

    first, second = reports
    for versioned in ("01_raw/raw_pages.json", "02_intermediate/clean_pages.json", "02_intermediate/doc_chunks.json"):
        assert len(list((tmp_path / "data" / versioned).iterdir())) == 2, versioned  # the second run overwrote nothing
    assert first["changes"]["new"] == sorted(public)
    assert second["error_count"] == 0 and second["errors"] == []
    assert second["changes"]["unchanged"] == sorted(public)
    assert second["changes_count"] == {"new": 0, "changed": 0, "unchanged": len(public), "removed": 0}
    assert second["scrapy_stats"]["downloader/request_count"] == len(public) + 1  # + robots.txt: each page once
    robots = [s["url"] for s in second["skipped"] if s["reason"] == "robots"]
    assert robots == sorted(private)
    page = raw_pages[0]
    assert {"url", "final_url", "status", "title", "fetched_at", "sha256", "html"} <= page.keys()
    assert page["status"] == 200 and page["final_url"].startswith(LIVE_ORIGIN)

    clean = {page["url"]: normalised(page["text"]) for page in catalog.load("clean_pages")}
    chunks = catalog.load("doc_chunks")
    assert {chunk["url"] for chunk in chunks} == public  # chunks cover every page
    assert len({chunk["chunk_id"] for chunk in chunks}) == len(chunks)
    for chunk in chunks:
        assert normalised(chunk["text"]) in clean[chunk["url"]], chunk["chunk_id"]
    assert "Docs home" not in clean[LIVE_ORIGIN + "/docs/competitions"]  # the navigation is gone
    index = catalog.load("retrieval_index")  # one unit-norm embedding per chunk, same order
    assert [c["chunk_id"] for c in index["chunks"]] == [c["chunk_id"] for c in chunks]
    assert index["embeddings"].shape[0] == len(chunks)


def test_every_failure_is_reported_with_its_reason(bad_site, ingestion_params):
    params = ingestion_params | {"target": "live", "start_url": f"{bad_site}/docs"}
    params["crawl"] = params["crawl"] | {"download_timeout": 1, "retry_times": 1}
    pages, report = crawl_docs([], params)

    reasons = {skip["url"].removeprefix(bad_site): skip["reason"] for skip in report["skipped"]}
    assert reasons["/docs/server-error"] == "http-status"
    assert reasons["/docs/missing"] == "http-status"
    assert reasons["/docs/slow"] == "timeout"
    assert reasons["/docs/data.csv"] == "non-html"
    assert reasons["/docs/empty"] == "empty"
    assert reasons["/docs/private/secret"] == "robots"
    assert reasons["https://example.org/elsewhere"] == "off-site"
    assert reasons["/blog/post"] == "off-site"
    assert reasons["mailto:docs@example.org"] == "not-http"
    details = {skip["url"].removeprefix(bad_site): skip["detail"] for skip in report["skipped"]}
    assert details["/docs/server-error"] == "500" and details["/docs/missing"] == "404"
    assert {page["url"].removeprefix(bad_site) for page in pages} == {"/docs", "/docs/ok", "/docs/malformed"}
    assert report["error_count"] == 0
    assert BadSiteHandler.requested.count("/docs/server-error") == 2  # retried once
    assert "/docs/private/secret" not in BadSiteHandler.requested  # robots.txt obeyed


def test_limits_cut_the_crawl_and_say_so(bad_site, ingestion_params):
    params = ingestion_params | {"target": "live", "start_url": f"{bad_site}/docs"}
    params["crawl"] = params["crawl"] | {"max_depth": 0}
    pages, report = crawl_docs([], params)
    assert [page["url"] for page in pages] == [f"{bad_site}/docs"]
    assert report["skipped_by_reason"]["depth-limit"] == 8  # the 8 in-scope links


def test_unreachable_start_url_fails_naming_it(ingestion_params):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = f"http://127.0.0.1:{port}/docs"
    params = ingestion_params | {"target": "live", "start_url": start}
    params["crawl"] = params["crawl"] | {"retry_times": 0}
    with pytest.raises(CrawlError, match=f"start URL {start} could not be crawled"):
        crawl_docs([], params)


@pytest.mark.slow
def test_render_js_crawls_through_headless_chromium(ingestion_params):
    chromium = ingestion_params["crawl"]["chromium_executable"]
    skip_unless_ci_has(Path(chromium).exists(), f"{chromium} is not installed (.ci/run installs Debian's chromium)")
    params = ingestion_params | {"crawl": ingestion_params["crawl"] | {"render_js": True, "max_pages": 2}}
    pages, report = crawl_docs([], params)
    assert len(pages) == 2 and report["error_count"] == 0
    assert report["skipped_by_reason"]["page-limit"] > 0
    # the snapshot's script sets rel="noopener" on every link: only a browser-rendered DOM has it
    assert all('rel="noopener"' in page["html"] for page in pages)
    plain, _ = crawl_docs([], ingestion_params | {"crawl": ingestion_params["crawl"] | {"max_pages": 1}})
    assert 'rel="noopener"' not in plain[0]["html"]
