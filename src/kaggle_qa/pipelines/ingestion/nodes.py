"""Ingestion nodes: crawl the docs → raw pages + crawl report → clean pages → doc chunks."""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

from matplotlib.figure import Figure
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from .chunking import chunk_page, code_line_share, word_count
from .cleaning import html_to_text, page_title
from .report import chunk_length_figure, ingestion_markdown
from .server import serve_site
from .spider import SKIP_REASONS, CrawlError, CrawlResult, allowed_prefixes, compile_patterns, crawl_site

logger = logging.getLogger(__name__)


def origin_of(url: str) -> str:
    """'https://docs.example.org/en/latest/' -> 'https://docs.example.org'."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def rebase(url: str, served_origin: str, canonical_origin: str) -> str:
    """Rewrite a URL on the local snapshot server to the site it mirrors (stable across runs)."""
    return canonical_origin + url[len(served_origin) :] if url.startswith(served_origin) else url


def rebase_result(result: CrawlResult, served_origin: str, canonical_origin: str) -> CrawlResult:
    """Every URL of a crawl of the local snapshot, rewritten to the live site's origin."""
    def fix(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        return record | {k: rebase(record[k], served_origin, canonical_origin) for k in keys if record.get(k)}

    return CrawlResult(
        pages=[fix(p, ("url", "final_url")) for p in result.pages],
        skipped=[fix(s, ("url", "final_url", "referer")) for s in result.skipped],
        errors=[fix(e, ("url", "referer")) for e in result.errors],
        stats=result.stats,
    )


def unique_pages(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per final URL (two links that redirect to the same page keep the first)."""
    seen, kept = set(), []
    for page in pages:
        if page["final_url"] not in seen:
            seen.add(page["final_url"])
            kept.append(page)
    return sorted(kept, key=lambda page: page["url"])


def compare_versions(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> dict[str, list[str]]:
    """new / changed / unchanged / removed page URLs, comparing content sha256 by URL."""
    before = {page["url"]: page["sha256"] for page in previous}
    after = {page["url"]: page["sha256"] for page in current}
    return {
        "new": sorted(url for url in after if url not in before),
        "changed": sorted(url for url in after if url in before and before[url] != after[url]),
        "unchanged": sorted(url for url in after if url in before and before[url] == after[url]),
        "removed": sorted(url for url in before if url not in after),
    }


def check_start_page(result: CrawlResult, start_url: str, shown_as: str) -> None:
    """Fail, naming the start URL, when it was not fetched as an HTML page."""
    if any(page["url"] == start_url for page in result.pages):
        return
    problems = [f"{s['reason']} {s['detail']}".strip() for s in result.skipped if s["url"] == start_url]
    problems += [e["error"] for e in result.errors if e["url"] == start_url]
    reason = "; ".join(problems) or "no response"
    raise CrawlError(f"start URL {shown_as} could not be crawled: {reason}")


def start_urls_of(params: dict[str, Any]) -> list[str]:
    """ingestion.crawl.start_urls (a list), else [ingestion.start_url]; all on one origin."""
    urls = params["crawl"].get("start_urls") or [params["start_url"]]
    if isinstance(urls, str):
        urls = [urls]
    origins = {origin_of(url) for url in urls}
    if len(origins) != 1 or not all(urlsplit(url).scheme in ("http", "https") for url in urls):
        raise ValueError(f"params:ingestion.crawl.start_urls must be http(s) URLs on one origin, got {urls}")
    return list(urls)


def crawl_docs(previous_raw_pages: list[dict[str, Any]], params: dict[str, Any]) -> tuple[list[dict], dict]:
    """Crawl the docs (a site folder served on 127.0.0.1, or a live site) into raw pages and a report."""
    crawl = params["crawl"]
    start_urls = start_urls_of(params)
    canonical = origin_of(start_urls[0])
    sitemap_url = crawl.get("sitemap_url")
    compile_patterns(crawl.get("exclude_patterns"))  # a bad regex or prefix fails here, naming its key
    allowed_prefixes(crawl)
    if crawl["max_pages"] < 1 or crawl["max_depth"] < 0:
        raise ValueError(f"params:ingestion.crawl needs max_pages >= 1 and max_depth >= 0, got "
                         f"{crawl['max_pages']} and {crawl['max_depth']}")
    started = datetime.now(timezone.utc)
    if params["target"] == "snapshot":
        snapshot = params["snapshot"]
        server = serve_site(snapshot["path"], snapshot["host"], snapshot["port"], snapshot.get("mount_path") or "/")
    elif params["target"] == "live":
        server = nullcontext(canonical)
    else:
        raise ValueError(f"params:ingestion.target must be 'snapshot' or 'live', got {params['target']!r}")
    with server as served_origin:
        def served(url: str) -> str:
            return served_origin + url[len(canonical):] if url.startswith(canonical) else url

        crawl_urls = [served(url) for url in start_urls]
        logger.info("Crawling %s (as %s), max %d pages, depth %d%s", ", ".join(crawl_urls), ", ".join(start_urls),
                    crawl["max_pages"], crawl["max_depth"], f", sitemap {sitemap_url}" if sitemap_url else "")
        result = crawl_site(crawl_urls, crawl, served(sitemap_url) if sitemap_url else None, canonical)
        result = rebase_result(result, served_origin, canonical)
    for start_url, crawl_url in zip(start_urls, crawl_urls, strict=True):
        check_start_page(result, start_url, start_url if crawl_url == start_url else f"{start_url} (served at {crawl_url})")

    pages = unique_pages(result.pages)
    for page in pages:
        page.pop("depth", None)
    changes = compare_versions(previous_raw_pages or [], pages)
    reasons = Counter(skip["reason"] for skip in result.skipped)
    excluded = Counter(skip["detail"] for skip in result.skipped if skip["reason"] == "excluded")
    report = {
        "target": params["target"],
        "start_url": start_urls[0],
        "start_urls": start_urls,
        "sitemap_url": sitemap_url,
        "served_from": served_origin,
        "render_js": crawl["render_js"],
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pages_fetched": len(pages),
        "skipped_count": len(result.skipped),
        "skipped_by_reason": {reason: reasons.get(reason, 0) for reason in SKIP_REASONS},
        "excluded_count": sum(excluded.values()),
        "excluded_by_pattern": {pattern: excluded.get(pattern, 0) for pattern in crawl.get("exclude_patterns") or []},
        "error_count": len(result.errors),
        "changes_count": {kind: len(urls) for kind, urls in changes.items()},
        "changes": changes,
        "skipped": sorted(result.skipped, key=lambda s: (s["reason"], s["url"])),
        "errors": result.errors,
        "scrapy_stats": {k: v for k, v in result.stats.items() if isinstance(v, (int, float, str))},
    }
    logger.info(
        "Crawl: %d pages, %d skipped %s, %d errors; vs previous version: %s",
        len(pages), len(result.skipped), dict(reasons), len(result.errors), report["changes_count"],
    )
    return pages, report


def clean_pages(raw_pages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Raw HTML pages → clean text with headings, lists, code and link targets (chrome dropped)."""
    cleaning = params["cleaning"]
    cleaned, empty = [], []
    for page in tqdm(raw_pages, desc="clean pages", unit="page"):
        text = html_to_text(page["html"], page["final_url"], cleaning["drop_tags"], cleaning["content_selectors"],
                            cleaning.get("drop_selectors"), cleaning.get("glyphs") or [],
                            cleaning.get("drop_blocks") or [], cleaning.get("signature_selectors") or [],
                            cleaning.get("text_only_links") or [])
        if not text.strip():
            empty.append(page["url"])
            continue
        title = page_title(page["html"]) or page["title"]
        cleaned.append({"url": page["url"], "title": title, "text": text, "n_words": word_count(text),
                        "sha256": page["sha256"]})
    if empty:
        logger.warning("No text left after cleaning, dropped %d page(s): %s", len(empty), ", ".join(empty))
    logger.info("Cleaned %d pages, %d words", len(cleaned), sum(p["n_words"] for p in cleaned))
    return cleaned


def chunk_pages(clean_pages: list[dict[str, Any]], params: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    """Clean pages → heading-aware chunks with stable ids; identical chunk texts kept once.

    Also returns a summary of the dropped duplicates: their count per page, and where the
    kept copy of each page's first duplicate lives (counts, not one log line per chunk: a
    huge page can repeat a block thousands of times); and the pages left out as source code
    (share of code lines above ``chunking.code_page_share``, unless ``include_code_pages``).
    """
    sizes = params["chunking"]
    if not 0 < sizes["min_words"] <= sizes["target_words"] <= sizes["max_words"]:
        raise ValueError(f"params:ingestion.chunking needs 0 < min_words <= target_words <= max_words, got {sizes}")
    max_code_lines = sizes.get("max_code_lines", 30)
    share_limit = sizes.get("code_page_share", 1.0)
    if max_code_lines < 1 or not 0 < share_limit <= 1:
        raise ValueError(f"params:ingestion.chunking needs max_code_lines >= 1 and 0 < code_page_share <= 1, got "
                         f"{max_code_lines} and {share_limit}")
    chunks, kept_at, dropped = [], {}, Counter()
    first_kept: dict[str, str] = {}
    code_pages = []
    for page in tqdm(clean_pages, desc="chunk pages", unit="page"):
        share = code_line_share(page["text"])
        if share > share_limit:
            code_pages.append({"url": page["url"], "code_share": round(share, 3),
                               "kept": bool(sizes.get("include_code_pages"))})
            if not sizes.get("include_code_pages"):
                continue
        for chunk in chunk_page(page["url"], page["title"], page["text"],
                                sizes["target_words"], sizes["max_words"], sizes["min_words"], max_code_lines):
            key = " ".join(chunk["text"].split()).lower()
            if key in kept_at:
                dropped[chunk["url"]] += 1
                first_kept.setdefault(chunk["url"], kept_at[key])
                continue
            kept_at[key] = f"{chunk['url']} {' > '.join(chunk['heading_path'])}".strip()
            chunks.append(chunk)
    summary = {
        "duplicate_chunks_dropped": sum(dropped.values()),
        "duplicates_by_page": [{"url": url, "dropped": n, "first_kept_copy": first_kept[url]}
                               for url, n in dropped.most_common()],
        "code_pages": code_pages,
        "code_pages_dropped": sum(not page["kept"] for page in code_pages),
    }
    if code_pages:
        logger.info("%d page(s) are mostly source code (share of code lines > %s), %s: %s", len(code_pages),
                    share_limit, "kept (include_code_pages)" if sizes.get("include_code_pages") else "left out",
                    ", ".join(f"{page['url']} ({page['code_share']:.0%})" for page in code_pages[:10]))
    if dropped:
        top = ", ".join(f"{url}: {n}" for url, n in dropped.most_common(5))
        more = f" and {len(dropped) - 5} more page(s)" if len(dropped) > 5 else ""
        logger.info("Dropped %d duplicate chunk(s) on %d page(s) (%s%s)", summary["duplicate_chunks_dropped"],
                    len(dropped), top, more)
    words = [chunk["n_words"] for chunk in chunks]
    logger.info("%d chunks from %d pages, %.1f words on average (min %d, max %d)", len(chunks),
                len(clean_pages), sum(words) / max(len(words), 1), min(words, default=0), max(words, default=0))
    return chunks, summary


def report_ingestion(
    crawl_report: dict, clean_pages: list[dict], doc_chunks: list[dict], chunking_summary: dict,
    params: dict[str, Any],
) -> tuple[str, Figure]:
    """Markdown summary of the crawl and the chunks, plus a histogram of chunk lengths."""
    markdown = ingestion_markdown(crawl_report, clean_pages, doc_chunks, chunking_summary)
    return markdown, chunk_length_figure(doc_chunks, params["chunking"], params["report"])
