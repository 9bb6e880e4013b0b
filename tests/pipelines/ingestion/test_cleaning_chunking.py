"""Cleaning and chunking on hand-written HTML."""

from __future__ import annotations

import re

import pytest

from kaggle_qa.pipelines.ingestion.chunking import chunk_page, split_sentences
from kaggle_qa.pipelines.ingestion.cleaning import html_to_text
from kaggle_qa.pipelines.ingestion.nodes import chunk_pages, clean_pages, compare_versions

PAGE = """<!DOCTYPE html><html><head><title>Guide | Docs</title>
<style>body { color: red }</style><script>var tracking = "SECRET_SCRIPT";</script></head>
<body>
<header><a href="/">Home</a> Sign in</header>
<nav><ul><li><a href="/docs/a">Sidebar link</a></li></ul></nav>
<main>
  <h1>Guide</h1>
  <h2>Getting   started</h2>
  <p>Thanks   @jane_doe for the tip!   Mail <a href="mailto:help@kaggle.com">help@kaggle.com</a>.</p>
  <p>Kudos to <a href="/jdoe">@jdoe</a> and the team.</p>
  <p>Read the <a href="/docs/api#auth">API docs</a> and run <code>pip install kaggle</code>.</p>
  <ul><li>First item</li><li>Second <b>bold</b> item<ul><li>Nested item</li></ul></li></ul>
  <h3>Code</h3>
  <pre>for i in range(3):
    print(i)</pre>
  <div role="navigation">Previous | Next</div>
  <aside>Was this helpful?</aside>
</main>
<footer>© Kaggle 2024</footer>
</body></html>"""


@pytest.fixture
def cleaned(ingestion_params) -> str:
    cleaning = ingestion_params["cleaning"]
    return html_to_text(PAGE, "https://www.kaggle.com/docs/guide", cleaning["drop_tags"], cleaning["content_selectors"])


def test_cleaning_keeps_structure_and_drops_chrome(cleaned):
    blocks = cleaned.split("\n\n")
    assert blocks[:2] == ["# Guide", "## Getting started"]
    assert "### Code" in blocks
    assert "Read the API docs (https://www.kaggle.com/docs/api#auth) and run `pip install kaggle`." in blocks
    assert "- First item" in blocks and "- Second bold item" in blocks and "- Nested item" in blocks
    assert "```\nfor i in range(3):\n    print(i)\n```" in blocks  # code indentation kept
    for boilerplate in ("Sidebar link", "Sign in", "SECRET_SCRIPT", "color: red", "Previous", "helpful", "©"):
        assert boilerplate not in cleaned
    assert "@jane_doe" not in cleaned and "Thanks for the tip!" in cleaned  # mention gone, whitespace tidy
    assert "Kudos to and the team." in cleaned and "jdoe" not in cleaned  # a linked mention, link and all
    assert "help@kaggle.com (mailto:help@kaggle.com)" in cleaned  # e-mail addresses are not mentions
    prose = re.sub(r"```.*?```", "", cleaned, flags=re.DOTALL)
    assert not re.search(r"[ \t]{2,}|^ | $", prose, flags=re.MULTILINE)  # stray whitespace gone


def test_clean_pages_node_uses_the_final_url_and_drops_empty_pages(ingestion_params, caplog):
    raw = [
        {"url": "https://x/docs/guide", "final_url": "https://x/docs/guide", "title": "t", "sha256": "1", "html": PAGE},
        {"url": "https://x/docs/blank", "final_url": "https://x/docs/blank", "title": "t", "sha256": "2",
         "html": "<html><body><nav>only navigation</nav></body></html>"},
    ]
    pages = clean_pages(raw, ingestion_params)
    assert [page["url"] for page in pages] == ["https://x/docs/guide"]
    assert pages[0]["title"] == "Guide"
    assert "https://x/docs/blank" in caplog.text  # dropped, but not silently


def sentence(i: int, words: int) -> str:
    return "Sentence " + " ".join(f"w{i}x{j}" for j in range(words - 2)) + " end."


def section_text(n_sentences: int, words: int, offset: int = 0) -> str:
    return "\n\n".join(sentence(offset + i, words) for i in range(n_sentences))


def test_chunks_respect_size_bounds_and_sentence_ends(ingestion_params):
    sizes = ingestion_params["chunking"]
    long_sentence = "Long " + " ".join(f"x{i}" for i in range(sizes["max_words"] + 20)) + " end."
    text = "\n\n".join([
        "# Page", "## Big section", section_text(30, 12),
        "## Tiny section", "Only a few words here.",
        "## Long sentence", long_sentence,
    ])
    chunks = chunk_page("https://x/docs/p", "Page", text, sizes["target_words"], sizes["max_words"], sizes["min_words"])
    big = [c for c in chunks if c["heading_path"] == ["Page", "Big section"]]
    assert len(big) > 3
    for chunk in big:
        assert sizes["min_words"] <= chunk["n_words"] <= sizes["max_words"]
        assert chunk["text"].endswith(".")  # never cut mid-sentence
        assert chunk["text"].split()[0] == "Sentence"
    # nothing lost or duplicated: the chunks put back together are the section's text
    assert " ".join(c["text"] for c in big).split() == section_text(30, 12).split()
    tiny = [c for c in chunks if c["heading_path"] == ["Page", "Tiny section"]]
    assert [c["text"] for c in tiny] == ["Only a few words here."]
    longest = [c for c in chunks if c["heading_path"] == ["Page", "Long sentence"]]
    assert [c["text"] for c in longest] == [long_sentence]  # one long sentence is never split


def test_chunk_ids_are_stable_and_identical_chunks_kept_once(ingestion_params):
    text = "# Page\n\n## A\n\nKaggle hosts competitions. Everyone can join.\n\n## B\n\nKaggle hosts competitions. Everyone can join."
    pages = [{"url": "https://x/docs/p", "title": "Page", "text": text},
             {"url": "https://x/docs/q", "title": "Page", "text": text}]
    (first, summary), (again, _) = chunk_pages(pages, ingestion_params), chunk_pages(pages, ingestion_params)
    assert [c["chunk_id"] for c in first] == [c["chunk_id"] for c in again]
    assert len(first) == 1 and first[0]["heading_path"] == ["Page", "A"] and first[0]["url"] == "https://x/docs/p"
    assert summary == {"duplicate_chunks_dropped": 3, "duplicates_by_page": [  # most duplicates first
        {"url": "https://x/docs/q", "dropped": 2, "first_kept_copy": "https://x/docs/p Page > A"},
        {"url": "https://x/docs/p", "dropped": 1, "first_kept_copy": "https://x/docs/p Page > A"}],
        "code_pages": [], "code_pages_dropped": 0}
    moved = chunk_page("https://x/docs/p", "Page", text.replace("## A", "## C"), 65, 100, 25)
    assert moved[0]["chunk_id"] != first[0]["chunk_id"]  # the id depends on where the text lives


def test_sentence_splitting_ignores_abbreviations():
    assert split_sentences("Use a GPU, e.g. a P100. Then save. Done!") == ["Use a GPU, e.g. a P100.", "Then save.", "Done!"]
    assert split_sentences("```\nx = 1. Y = 2\n```") == ["```\nx = 1. Y = 2\n```"]


def test_compare_versions_classifies_every_page():
    previous = [{"url": "a", "sha256": "1"}, {"url": "b", "sha256": "2"}, {"url": "c", "sha256": "3"}]
    current = [{"url": "a", "sha256": "1"}, {"url": "b", "sha256": "changed"}, {"url": "d", "sha256": "4"}]
    assert compare_versions(previous, current) == {"new": ["d"], "changed": ["b"], "unchanged": ["a"], "removed": ["c"]}


def test_a_short_tail_borrows_sentences_instead_of_standing_alone():
    text = "\n\n".join([sentence(0, 30), sentence(1, 30), sentence(2, 8)])
    chunks = [c["text"] for c in chunk_page("u", "t", text, 60, 65, 25)]
    # greedy packing gives 60 + 8 words; 68 > max_words, so the tail borrows a sentence instead
    assert [len(c.split()) for c in chunks] == [30, 38]
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize("sizes", [{"min_words": 70}, {"max_words": 50}, {"min_words": 0}])
def test_inconsistent_chunk_sizes_are_rejected_naming_the_key(ingestion_params, sizes):
    params = ingestion_params | {"chunking": ingestion_params["chunking"] | sizes}
    with pytest.raises(ValueError, match="params:ingestion.chunking"):
        chunk_pages([{"url": "u", "title": "t", "text": "One sentence."}], params)
