"""A human-readable summary of one ingestion run: markdown tables and a chunk-length histogram."""

from __future__ import annotations

from statistics import mean, median
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the headless backend)
from matplotlib.figure import Figure  # noqa: E402


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# Skips of pages the server did answer: each is listed with its detail (the others are counts only).
LISTED_REASONS = ("redirect-off-site", "redirect-loop", "duplicate-of", "binary", "bad-encoding")
MAX_LISTED = 50


def ingestion_markdown(
    crawl_report: dict, clean_pages: list[dict], doc_chunks: list[dict], chunking_summary: dict | None = None
) -> str:
    """Crawl outcome, skips by reason, changes vs the previous crawl, and per-page chunk statistics."""
    words = [chunk["n_words"] for chunk in doc_chunks] or [0]
    per_page = {}
    for chunk in doc_chunks:
        per_page.setdefault(chunk["url"], []).append(chunk["n_words"])
    sections = [
        "# Ingestion report",
        f"Crawl of `{crawl_report['start_url']}` (target `{crawl_report['target']}`, served from "
        f"`{crawl_report['served_from']}`, render_js={crawl_report['render_js']}), "
        f"{crawl_report['started_at']} → {crawl_report['finished_at']}.",
        f"**{crawl_report['pages_fetched']} pages fetched, {crawl_report['skipped_count']} URLs skipped, "
        f"{crawl_report['error_count']} errors.**",
        "## Skipped URLs by reason",
        markdown_table(["reason", "URLs"], [[r, n] for r, n in crawl_report["skipped_by_reason"].items() if n]),
    ]
    if crawl_report.get("excluded_by_pattern"):
        sections += [
            "URLs left out by `crawl.exclude_patterns`:",
            markdown_table(["pattern", "URLs"], [[f"`{p}`", n] for p, n in crawl_report["excluded_by_pattern"].items()]),
        ]
    sections += [
        "## Changes since the previous crawl",
        markdown_table(["change", "pages"], [[k, n] for k, n in crawl_report["changes_count"].items()]),
    ]
    listed = [s for s in crawl_report.get("skipped", []) if s["reason"] in LISTED_REASONS]
    if listed:
        sections += [
            "## Pages answered but not kept",
            markdown_table(["url", "reason", "detail"], [[s["url"], s["reason"], s["detail"]] for s in listed[:MAX_LISTED]]),
        ]
        if len(listed) > MAX_LISTED:
            sections.append(f"… and {len(listed) - MAX_LISTED} more (all in crawl_report.json).")
    if crawl_report["errors"]:
        sections += ["## Errors", markdown_table(["url", "error"], [[e["url"], e["error"]] for e in crawl_report["errors"]])]
    sections += [
        "## Chunks",
        f"{len(doc_chunks)} chunks from {len(clean_pages)} clean pages; words per chunk: mean "
        f"{mean(words):.1f}, median {median(words):.0f}, min {min(words)}, max {max(words)}.",
        markdown_table(
            ["page", "clean words", "chunks", "mean words/chunk"],
            [[page["url"], page["n_words"], len(per_page.get(page["url"], [])),
              f"{mean(per_page[page['url']]):.1f}" if page["url"] in per_page else "-"] for page in clean_pages],
        ),
        "![chunk lengths](chunk_lengths.png)",
    ]
    code_pages = (chunking_summary or {}).get("code_pages", [])
    if code_pages:
        sections[-1:-1] = [
            f"**{chunking_summary['code_pages_dropped']} page(s) left out as source code** (share of code lines above "
            "`chunking.code_page_share`; `chunking.include_code_pages: true` keeps them):",
            markdown_table(["page", "code share", "kept"],
                           [[p["url"], f"{p['code_share']:.0%}", p["kept"]] for p in code_pages[:MAX_LISTED]]),
        ]
    duplicates = (chunking_summary or {}).get("duplicates_by_page", [])
    if duplicates:
        sections[-1:-1] = [
            f"**{chunking_summary['duplicate_chunks_dropped']} duplicate chunks dropped** (an identical text "
            "was kept once, at its first place):",
            markdown_table(["page", "duplicates dropped", "first kept copy"],
                           [[d["url"], d["dropped"], d["first_kept_copy"]] for d in duplicates[:MAX_LISTED]]),
        ]
    return "\n\n".join(sections) + "\n"


def chunk_length_figure(doc_chunks: list[dict], chunking: dict, report: dict) -> Figure:
    """Histogram of words per chunk, with the chunking bounds and the paper's context lengths."""
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist([chunk["n_words"] for chunk in doc_chunks], bins=report["histogram_bins"], color="#4c72b0")
    for name in ("min_words", "target_words", "max_words"):
        axes.axvline(chunking[name], linestyle="--", color="gray")
        axes.annotate(name, (chunking[name], axes.get_ylim()[1] * 0.95), rotation=90, fontsize=8, va="top")
    for (label, words), color in zip(report["paper_context_words"].items(), ("#dd8452", "#55a868"), strict=False):
        axes.axvline(words, color=color, label=f"{label}: {words:g} words")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_xlabel("words per chunk")
    axes.set_ylabel("chunks")
    axes.set_title(f"{len(doc_chunks)} doc chunks")
    figure.tight_layout()
    return figure
