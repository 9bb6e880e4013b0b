"""Cleaning for Sphinx, MkDocs (Material) and Docusaurus pages, and chunking that keeps answers whole.

The fixtures (fixtures/*.html) are small hand-written pages with each generator's real chrome:
permalink anchors, edit links, version banners, prev/next links, breadcrumbs, "On this page"
sidebars, back-to-top and copy buttons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kaggle_qa.pipelines.ingestion.chunking import chunk_page, code_line_share
from kaggle_qa.pipelines.ingestion.nodes import chunk_pages, clean_pages

FIXTURES = Path(__file__).parent / "fixtures"
CHROME = {  # text each page's chrome carries: none of it may survive cleaning
    "sphinx": ["¶", "Permalink", "old version", "next", "Previous", "Commands", "Quick search", "Contents",
               "[source]", "Copy", "Copyright", "index"],
    "mkdocs": ["¶", "Retries #", "🔗", "Widget 3.0 is out", "latest", "Edit this page", "Guides", "Table of contents",
               "Last update", "Back to top", "Previous", "Next", "Install", "Made with", "Home"],
    "docusaurus": ["Star us", "1.x", "no longer", "latest version", "🏠", "Guides", "Version:", "On this page",
                   "Direct link", "Copy", "Edit this page", "Last updated", "Previous", "Next", "Install", "Intro",
                   "Copyright", "\u200b"],
}
CONTENT = {  # the answers each page holds: all of it must survive
    "sphinx": ["# Options", "## Basic Value Options", "### widget.option", "`widget.option(*param_decls)`",
               "To give an option a default value, pass it with the default keyword:\n\n```\n@widget.option('--n', default=1)\ndef dots(n):\n    print('.' * n)\n```",
               "Parameters:\n\n- show_default – show the default value in the help page."],
    "mkdocs": ["# Configuration", "## Retries", "## Timeouts", "Default: `3`",
               "To turn retries off:\n\n```\n[network]\nretries = 0\n```",
               "| `connect` | Seconds to open a connection. Default 5. |"],
    "docusaurus": ["# Deploying", "## Steps", "To deploy to production:\n\n- Build the bundle with `widget build`.",
                   "- Run `widget deploy --prod`.", "```\nwidget deploy --prod\n```"],
}


def page(name: str, html: str | None = None) -> dict:
    url = f"https://docs.example.org/{name}"
    return {"url": url, "final_url": url, "title": "", "sha256": "", "html": html or (FIXTURES / f"{name}.html").read_text()}


@pytest.mark.parametrize("generator", sorted(CHROME))
def test_generator_chrome_is_removed_and_content_kept(generator, ingestion_params):
    [clean] = clean_pages([page(generator)], ingestion_params)
    text = clean["text"]
    left = [chrome for chrome in CHROME[generator] if chrome in text]
    assert not left, f"{generator}: chrome left in the clean text: {left}\n{text}"
    missing = [content for content in CONTENT[generator] if content not in text]
    assert not missing, f"{generator}: content lost: {missing}\n{text}"
    assert "¶" not in clean["title"] and clean["title"] == CONTENT[generator][0].removeprefix("# ")


def test_without_the_generator_selectors_the_chrome_would_stay(ingestion_params):
    """The parameters do the work (not the tag list): turned off, Sphinx's and Docusaurus's chrome comes back."""
    params = ingestion_params | {"cleaning": ingestion_params["cleaning"] | {"drop_selectors": {}, "glyphs": [],
                                                                             "drop_blocks": []}}
    sphinx = clean_pages([page("sphinx")], params)[0]["text"]
    assert "¶" in sphinx and "old version" in sphinx
    docusaurus = clean_pages([page("docusaurus")], params)[0]["text"]
    assert "no longer actively maintained" in docusaurus and docusaurus.endswith("- Steps")  # banner, "On this page" list


def test_glyphs_are_never_stripped_from_code(ingestion_params):
    html = "<main><h2>Hashes #</h2><p>Use ¶ marks.</p><pre># a comment ¶\nx = 1</pre><h2>C#</h2></main>"
    text = clean_pages([page("p", html)], ingestion_params)[0]["text"]
    assert text.split("\n\n") == ["## Hashes", "Use marks.", "```\n# a comment ¶\nx = 1\n```", "## C#"]


def chunks_of(text: str, params: dict) -> list[dict]:
    sizes = params["chunking"]
    return chunk_page("https://x/p", "P", text, sizes["target_words"], sizes["max_words"], sizes["min_words"],
                      sizes["max_code_lines"])


def filler(n: int, words: int = 12) -> str:
    return "\n\n".join("Filler " + " ".join(f"f{i}w{j}" for j in range(words - 2)) + " end." for i in range(n))


@pytest.mark.parametrize("introduced", [
    "- `str` for text\n\n- `int` for whole numbers\n\n- `bool` for flags",
    "```\n$ pip install click\n$ click --help\n```",
    "| Setting | Meaning |\n\n| `connect` | Seconds to open a connection. Default 5. |",
])
def test_a_lead_in_stays_in_the_chunk_of_what_it_introduces(introduced, ingestion_params):
    # the lead-in falls where greedy packing alone would have closed the chunk after it
    text = "# P\n\n" + filler(4, 15) + "\n\nTo do it, run:\n\n" + introduced + "\n\n" + filler(3)
    chunks = chunks_of(text, ingestion_params)
    lead = [c for c in chunks if "To do it, run:" in c["text"]]
    assert len(lead) == 1
    rendered = "\n".join(line for line in introduced.split("\n") if line)
    assert "To do it, run:\n" + rendered in lead[0]["text"]  # the lead-in line directly followed by its unit
    assert all(c["n_words"] <= ingestion_params["chunking"]["max_words"] for c in chunks)
    assert " ".join(c["text"] for c in chunks).split() == text.replace("# P", "").split()  # nothing lost


def test_a_long_list_keeps_what_fits_with_its_lead_in(ingestion_params):
    max_words = ingestion_params["chunking"]["max_words"]
    items = "\n\n".join(f"- item {i} " + " ".join(["word"] * 8) for i in range(30))
    chunks = chunks_of("# P\n\nThe items are:\n\n" + items, ingestion_params)
    assert chunks[0]["text"].startswith("The items are:\n- item 0 ")
    assert all(c["n_words"] <= max_words for c in chunks) and len(chunks) > 2
    assert chunks[0]["n_words"] > max_words - 11  # filled up to the bound, not cut early


def test_long_code_is_split_between_lines_into_fenced_parts(ingestion_params):
    max_lines = ingestion_params["chunking"]["max_code_lines"]
    code = "\n".join(f"value_{i} = compute({i}, 'x')  # step {i}" for i in range(2 * max_lines + 5))
    chunks = chunks_of(f"# P\n\nThe script:\n\n```\n{code}\n```", ingestion_params)
    assert len(chunks) == 3
    assert chunks[0]["text"].startswith("The script:\n```\nvalue_0 = ")
    parts = [c["text"][c["text"].index("```"):] for c in chunks]
    for part in parts:
        lines = part.split("\n")
        assert lines[0] == "```" and lines[-1] == "```" and len(lines) - 2 <= max_lines
    assert [line for part in parts for line in part.split("\n")[1:-1]] == code.split("\n")  # whole lines, in order


def test_a_default_line_stays_with_its_setting(ingestion_params):
    text = "# P\n\n## RETRY_TIMES\n\nDefault: `2`\n\nMaximum number of times to retry. " + filler(6)
    chunks = chunks_of(text, ingestion_params)
    assert chunks[0]["text"].startswith("Default: `2`\nMaximum number of times to retry.")
    after = "# P\n\n" + filler(5, 14) + "\n\nThe delay between retries.\n\nDefault: 5 seconds"
    chunks = chunks_of(after, ingestion_params)
    assert chunks[-1]["text"].endswith("The delay between retries.\nDefault: 5 seconds")


def test_source_code_pages_are_left_out_unless_asked(ingestion_params):
    source = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(100))
    pages = [{"url": "https://x/_modules/click/core", "title": "core", "text": f"# Source code for core\n\n```\n{source}\n```"},
             {"url": "https://x/guide", "title": "guide", "text": "# Guide\n\nClick is a package for command line interfaces."}]
    assert code_line_share(pages[0]["text"]) > ingestion_params["chunking"]["code_page_share"]
    chunks, summary = chunk_pages(pages, ingestion_params)
    assert {c["url"] for c in chunks} == {"https://x/guide"}
    assert summary["code_pages_dropped"] == 1 and summary["code_pages"][0]["url"] == "https://x/_modules/click/core"
    params = ingestion_params | {"chunking": ingestion_params["chunking"] | {"include_code_pages": True}}
    kept, summary = chunk_pages(pages, params)
    code = [c for c in kept if c["url"].endswith("core")]
    assert summary["code_pages_dropped"] == 0 and len(code) > 5  # bounded parts, never one 2,000-word chunk
    assert all(c["text"].count("\n") <= params["chunking"]["max_code_lines"] + 1 for c in code)
