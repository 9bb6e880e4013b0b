"""A second real docs site: the vendored Click manual (Sphinx) crawled over HTTP with `--env click`
settings, and the crawl options a user's own site needs (start URLs, sitemap, prefixes, excludes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kedro.runner import SequentialRunner

from kaggle_qa.pipelines.ingestion import create_pipeline
from kaggle_qa.pipelines.ingestion.nodes import crawl_docs
from kaggle_qa.pipelines.ingestion.spider import allowed_prefixes
from kaggle_qa.text import split_sentences
from kaggle_qa.user_questions import fact_found

from .conftest import PROJECT_ROOT
from .test_crawl import catalog_in
from .test_snapshot import merged_ingestion

CLICK_SITE = PROJECT_ROOT / "data/01_raw/click_docs_site"


def one_unit(text: str) -> bool:
    """A chunk that is one never-cut unit: a sentence, a code part (with its lead-in), or a lead-in + one item."""
    lines = text.split("\n")
    if lines[-1] == "```" and "```" in lines[:2]:
        return lines.index("```") <= 1 and lines.count("```") == 2
    return len(split_sentences(text)) == 1 or (len(lines) == 2 and lines[0].endswith(":"))


@pytest.fixture(scope="module")
def click_run(tmp_path_factory) -> dict:
    """One run of the ingestion pipeline (crawl → clean → chunk → report) with conf/click's parameters."""
    params = merged_ingestion("click")
    params["snapshot"]["path"] = str(CLICK_SITE)
    params["crawl"] |= {"log_level": "WARNING"}
    catalog = catalog_in(tmp_path_factory.mktemp("click"), params)
    SequentialRunner().run(create_pipeline().to_nodes("report_ingestion"), catalog)
    names = ("crawl_report", "raw_pages", "clean_pages", "doc_chunks", "ingestion_report")
    return {name: catalog.load(name) for name in names} | {"params": params}


def test_click_manual_is_crawled_with_its_index_pages_excluded(click_run):
    report, start = click_run["crawl_report"], click_run["params"]["start_url"]
    assert start == "https://click.palletsprojects.com/en/8.1.x/"
    excluded = {"genindex.html", "py-modindex.html"}
    unlinked = {"search.html"}  # only a <form> points at it
    files = {path.name for path in CLICK_SITE.glob("*.html")} - excluded - unlinked
    expected = {start + ("" if name == "index.html" else name) for name in files}
    assert {page["url"] for page in click_run["raw_pages"]} == expected  # index.html and / are one page
    assert report["skipped_by_reason"]["excluded"] == 2 and report["excluded_count"] == 2
    assert {s["url"].removeprefix(start) for s in report["skipped"] if s["reason"] == "excluded"} == excluded
    assert report["excluded_by_pattern"]["/genindex(\\.html)?/?$"] == 1
    assert report["error_count"] == 0 and report["skipped_by_reason"]["http-status"] == 0
    # Debian's links to its local Python docs are on the same host but outside /en/8.1.x
    assert any("/usr/share/doc/python3-doc/" in s["url"] for s in report["skipped"] if s["reason"] == "off-site")
    assert "crawl.exclude_patterns" in click_run["ingestion_report"]


def test_click_chunks_are_clean_bounded_and_keep_lead_ins_with_their_code(click_run):
    max_words = click_run["params"]["chunking"]["max_words"]
    for page in click_run["clean_pages"]:
        assert "¶" not in page["text"] and "Permalink to this" not in page["text"], page["url"]
        assert "Quick search" not in page["text"] and "Created using" not in page["text"], page["url"]
        assert "\nChangelog\n" not in page["text"], page["url"]  # the theme's toggle label
        assert "/usr/share/doc/" not in page["text"], page["url"]  # cleaning.text_only_links: link text kept, target not
    chunks = click_run["doc_chunks"]
    assert not [c for c in chunks if "_modules" in c["url"] or "genindex" in c["url"]]
    too_long = [c["text"] for c in chunks if c["n_words"] > max_words and not one_unit(c["text"])]
    assert not too_long, too_long[:2]
    quickstart = [c["text"] for c in chunks if c["url"].endswith("/quickstart.html")]
    assert any("If you are on Mac OS X or Linux:\n```\n$ pip install virtualenv --user\n```" in t for t in quickstart)
    # API signatures are headings named by their object, so chunks say which function they describe
    option = [c for c in chunks if c["heading_path"][-1:] == ["click.option"]]
    assert option and option[0]["text"].startswith("`click.option(")


def write(path: Path, html: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><head><title>t</title></head><body><main>{html}</main></body></html>")


def test_start_urls_sitemap_prefixes_and_excludes(tmp_path, ingestion_params):
    """A small site mounted at /docs/v1/: two start pages, a sitemap page no link reaches, excluded paths."""
    site = tmp_path / "site"
    write(site / "index.html", '<h1>Home</h1><p>Start.</p><a href="guide.html">g</a> <a href="_modules/core.html">src</a>'
          ' <a href="genindex.html">ix</a> <a href="index.html">home again</a> <a href="/other/page.html">other</a>')
    write(site / "guide.html", "<h1>Guide</h1><p>Guide text.</p>")
    write(site / "second.html", "<h1>Second</h1><p>A second start page.</p>")
    write(site / "only-in-sitemap.html", "<h1>Hidden</h1><p>Reached through the sitemap only.</p>")
    write(site / "_modules/core.html", "<pre>def f(): pass</pre>")
    write(site / "genindex.html", "<p>index</p>")
    canonical = "https://docs.example.org/docs/v1/"
    (site / "sitemap.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{canonical}only-in-sitemap.html</loc></url><url><loc>{canonical}_modules/core.html</loc></url>"
        "</urlset>")
    params = ingestion_params | {"start_url": canonical, "snapshot": ingestion_params["snapshot"] | {
        "path": str(site), "mount_path": "/docs/v1"}}
    params["crawl"] = params["crawl"] | {"start_urls": [canonical, canonical + "second.html"],
                                         "sitemap_url": canonical + "sitemap.xml",
                                         "allowed_path_prefixes": ["/docs/v1"]}
    pages, report = crawl_docs([], params)
    assert {p["url"].removeprefix(canonical) for p in pages} == {"", "guide.html", "second.html", "only-in-sitemap.html"}
    excluded = {s["url"].removeprefix(canonical): s["detail"] for s in report["skipped"] if s["reason"] == "excluded"}
    assert excluded == {"_modules/core.html": "/_modules/", "genindex.html": "/genindex(\\.html)?/?$"}
    assert report["start_urls"] == [canonical, canonical + "second.html"]
    assert [s["url"] for s in report["skipped"] if s["reason"] == "off-site"] == ["https://docs.example.org/other/page.html"]



def test_the_older_singular_prefix_still_works_and_wins():
    assert allowed_prefixes({"allowed_path_prefixes": ["/docs", "/api"]}) == ["/docs", "/api"]
    assert allowed_prefixes({"allowed_path_prefixes": ["/docs"], "allowed_path_prefix": "/"}) == ["/"]  # set by a user
    assert allowed_prefixes({}) == ["/"]
    with pytest.raises(ValueError, match="crawl.allowed_path_prefixes"):
        allowed_prefixes({"allowed_path_prefixes": "/docs"})  # a string, not a list


def test_bad_crawl_options_fail_naming_the_key(ingestion_params):
    params = ingestion_params | {"crawl": ingestion_params["crawl"] | {"exclude_patterns": ["(unclosed"]}}
    with pytest.raises(ValueError, match="crawl.exclude_patterns"):
        crawl_docs([], params)
    params = ingestion_params | {"crawl": ingestion_params["crawl"] | {
        "start_urls": ["https://a.example/docs", "https://b.example/docs"]}}
    with pytest.raises(ValueError, match="crawl.start_urls"):
        crawl_docs([], params)


def test_click_question_files_point_at_crawled_pages_and_quote_them(click_run):
    """data/01_raw/click_questions.json: 20 answers written from the pages the crawl records."""
    questions = json.loads((PROJECT_ROOT / "data/01_raw/click_questions.json").read_text())
    clean = {page["url"]: page["text"] for page in click_run["clean_pages"]}
    assert len(questions) == 20 and all(q.keys() == {"question", "expected_answer", "url", "key_facts"} for q in questions)
    assert all(fact_found(q["expected_answer"], fact) for q in questions for fact in q["key_facts"]), \
        "every key fact is stated by the written answer"
    assert len({q["question"] for q in questions}) == 20
    for q in questions:
        assert q["url"] in clean, q["url"]
        quoted = [s for s in re.findall(r"`([^`]+)`", q["expected_answer"]) if "..." not in s]
        assert all(s in clean[q["url"]] for s in quoted), (q["question"], quoted)
    off_topic = json.loads((PROJECT_ROOT / "data/01_raw/click_off_topic_questions.json").read_text())
    kinds = [q["kind"] for q in off_topic]
    assert kinds.count("near") >= 20 and kinds.count("far") >= 20 and set(kinds) == {"near", "far"}
