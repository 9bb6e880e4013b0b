"""Real crawls of a hostile site on 127.0.0.1: every trick gets a named reason, nothing garbled is kept."""

from __future__ import annotations

import logging

import pytest

from kaggle_qa.pipelines.ingestion.nodes import chunk_pages, clean_pages, crawl_docs, report_ingestion

from .hostile_site import CAFE_CP1252, HUGE_REPEATS, HostileSiteHandler, serve


@pytest.fixture(scope="module")
def hostile_crawl(request):
    """One crawl of the hostile site (pages, report, requested paths), shared by the tests below."""
    params = request.getfixturevalue("ingestion_params_module")
    with serve(HostileSiteHandler) as origin:
        start = f"{origin}/docs"
        pages, report = crawl_docs([], params | {"target": "live", "start_url": start})
    return origin, pages, report, list(HostileSiteHandler.requested)


def by_path(records: list[dict], origin: str) -> dict[str, dict]:
    return {record["url"].removeprefix(origin): record for record in records}


def test_redirects_out_of_scope_are_refused_before_the_outside_is_requested(hostile_crawl):
    origin, pages, report, requested = hostile_crawl
    skipped = by_path(report["skipped"], origin)
    away, elsewhere = skipped["/docs/away"], skipped["/docs/elsewhere"]
    assert away["reason"] == "redirect-off-site" and away["final_url"] == f"{origin}/outside/admin"
    assert elsewhere["reason"] == "redirect-off-site" and elsewhere["final_url"].startswith("http://localhost:")
    assert "/outside/admin" not in requested and "/docs/ok-elsewhere" not in requested  # never fetched
    source = skipped["/docs/source"]  # a redirect into an excluded path is refused like a link to it
    assert source["reason"] == "excluded" and source["detail"] == "/_modules/" and "/docs/_modules/core.html" not in requested
    assert not any("Secret admin" in page["html"] for page in pages)
    moved = by_path(pages, origin)["/docs/moved"]  # an in-scope redirect is followed, and said so
    assert moved["final_url"] == f"{origin}/docs/new-home" and "moved here" in moved["html"]


def test_loops_self_refreshes_and_aliases_are_reported(hostile_crawl):
    origin, pages, report, requested = hostile_crawl
    skipped = by_path(report["skipped"], origin)
    assert skipped["/docs/loop-a"]["reason"] == "redirect-loop"
    assert "/docs/loop-a -> " in skipped["/docs/loop-a"]["detail"]
    assert skipped["/docs/refresh"]["reason"] == "redirect-loop"
    assert skipped["/docs/refresh"]["detail"].startswith("meta refresh")
    assert skipped["/docs/alias"] == skipped["/docs/alias"] | {"reason": "duplicate-of", "detail": f"{origin}/docs/ok"}
    assert report["skipped_by_reason"]["redirect-loop"] == 2 and report["skipped_by_reason"]["duplicate-of"] == 1
    assert requested.count("/docs/ok") == 1  # the alias did not fetch the page a second time


def test_binary_and_undecodable_pages_are_skipped_and_a_meta_charset_is_honoured(hostile_crawl):
    origin, pages, report, _ = hostile_crawl
    skipped = by_path(report["skipped"], origin)
    assert skipped["/docs/binary"]["reason"] == "binary" and "control bytes" in skipped["/docs/binary"]["detail"]
    assert skipped["/docs/latin1"]["reason"] == "bad-encoding"
    assert skipped["/docs/latin1"]["detail"].startswith("not valid utf-8: byte 0xe9 at offset")
    meta = by_path(pages, origin)["/docs/meta-charset"]
    assert meta["title"] == "Café" and CAFE_CP1252 in meta["html"] and meta["encoding"] == "cp1252"
    assert not any("\ufffd" in page["html"] or "\ufffd" in page["title"] for page in pages)
    assert report["error_count"] == 0
    assert set(by_path(pages, origin)) == {"/docs", "/docs/ok", "/docs/moved", "/docs/meta-charset", "/docs/huge"}


def test_a_huge_repetitive_page_logs_counts_not_one_line_per_duplicate(hostile_crawl, ingestion_params, caplog):
    origin, pages, report, _ = hostile_crawl
    with caplog.at_level(logging.INFO, logger="kaggle_qa"):
        chunks, summary = chunk_pages(clean_pages(pages, ingestion_params), ingestion_params)
    huge = f"{origin}/docs/huge"
    assert summary["duplicate_chunks_dropped"] >= HUGE_REPEATS - 1
    assert summary["duplicates_by_page"][0]["url"] == huge
    assert sum(chunk["url"] == huge for chunk in chunks) <= 3  # the block is kept once (+ the intro)
    duplicate_lines = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(duplicate_lines) == 1 and f"{huge}: {summary['duplicate_chunks_dropped']}" in duplicate_lines[0]
    assert len(duplicate_lines[0]) < 500
    markdown, _ = report_ingestion(report, clean_pages(pages, ingestion_params), chunks, summary, ingestion_params)
    assert f"**{summary['duplicate_chunks_dropped']} duplicate chunks dropped**" in markdown
    assert "| redirect-off-site | 2 |" in markdown and f"| {origin}/docs/binary | binary |" in markdown
