"""The ingestion report: markdown numbers match the inputs, the histogram is drawn."""

from matplotlib.figure import Figure

from kaggle_qa.pipelines.ingestion.nodes import report_ingestion


def test_report_summarises_crawl_and_chunks(ingestion_params):
    crawl_report = {
        "start_url": "https://www.kaggle.com/docs", "target": "snapshot", "served_from": "http://127.0.0.1:1",
        "render_js": False, "started_at": "t0", "finished_at": "t1", "pages_fetched": 2, "skipped_count": 3,
        "error_count": 1, "skipped_by_reason": {"robots": 1, "off-site": 2, "timeout": 0},
        "changes_count": {"new": 0, "changed": 1, "unchanged": 1, "removed": 0},
        "errors": [{"url": "https://www.kaggle.com/docs/x", "error": "ConnectionRefusedError: boom"}],
        "skipped": [{"url": "https://www.kaggle.com/docs/away", "reason": "redirect-off-site",
                     "detail": "HTTP 302 to https://evil.example/admin"},
                    {"url": "https://www.kaggle.com/docs/y", "reason": "robots", "detail": ""}],
    }
    clean = [{"url": "u1", "n_words": 100}, {"url": "u2", "n_words": 7}]
    chunks = [{"url": "u1", "n_words": 60}, {"url": "u1", "n_words": 40}, {"url": "u2", "n_words": 7}]
    summary = {"duplicate_chunks_dropped": 12005,
               "duplicates_by_page": [{"url": "u1", "dropped": 12005, "first_kept_copy": "u1 Big > Part"}]}
    markdown, figure = report_ingestion(crawl_report, clean, chunks, summary, ingestion_params)
    assert "**12005 duplicate chunks dropped**" in markdown and "| u1 | 12005 | u1 Big > Part |" in markdown
    assert "**2 pages fetched, 3 URLs skipped, 1 errors.**" in markdown
    assert "| off-site | 2 |" in markdown and "timeout" not in markdown  # only reasons that occurred
    assert "| changed | 1 |" in markdown
    assert "| https://www.kaggle.com/docs/away | redirect-off-site | HTTP 302 to https://evil.example/admin |" in markdown
    assert "docs/y" not in markdown  # robots skips are counted, not listed
    assert "ConnectionRefusedError: boom" in markdown
    assert "3 chunks from 2 clean pages; words per chunk: mean 35.7, median 40, min 7, max 60." in markdown
    assert "| u1 | 100 | 2 | 50.0 |" in markdown
    assert isinstance(figure, Figure) and figure.axes[0].get_xlabel() == "words per chunk"
