"""Build the bundled offline Kaggle docs site from the March 2024 text scrape.

The scrape (``data/01_raw/kaggle_docs_2024-03/*.txt``, vendored: one file per docs page) keeps the page
layout as indentation: an unindented line is an ``h3`` section, a 2-space line followed by
4-space lines is an ``h4`` subsection, every other line is a paragraph. Links appear as
``text (url)``; a few inline tags (``<strong>``, ``<code>``, ``<br/>``, ``<img>``) survived.

The builder turns each file into one static page at the live site's path
(``0_competitions.txt`` → ``/docs/competitions``), keeps every sentence, adds the chrome a
real docs page has (header, navigation, footer, a script) so cleaning has something to
remove, links pages to each other where the text names another docs page, writes an index
at ``/docs`` and a ``robots.txt`` that disallows ``/docs/internal/`` (with one small page
there, linked from the index, to prove the crawler obeys it). Output is deterministic:
rebuilding from the same text gives byte-identical files.

    python -m kaggle_qa.pipelines.ingestion.snapshot \
        --source data/01_raw/kaggle_docs_2024-03 --out data/01_raw/kaggle_docs_site

Pages are stored as ``docs.html`` and ``docs/<slug>.html`` and served at clean URLs
(``/docs``, ``/docs/<slug>``) by :func:`kaggle_qa.pipelines.ingestion.server.serve_site`.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_DESCRIPTION = (
    "Text of kaggle.com/docs as scraped on 2024-03-18/19 by the authors of 'Fine-tuning "
    "Google's Gemma (7b) LLM' (Context Crafters, Georgia Tech CS 7643) with Selenium + "
    "BeautifulSoup"
)
SCRAPE_DATE = "2024-03-18/19"
LIVE_ORIGIN = "https://www.kaggle.com"
DISALLOWED_PREFIX = "/docs/internal/"
PRIVATE_PAGE_SLUG = "internal/style-guide"

PAGE_TITLES = {
    "competitions": "Competitions",
    "datasets": "Datasets",
    "notebooks": "Notebooks",
    "api": "Public API",
    "tpu": "Tensor Processing Units (TPUs)",
    "models": "Models",
    "competitions-setup": "Competitions Setup",
    "organizations": "Organizations",
}
# Where the text names another docs page, its first mention links there (first phrase found wins).
CROSS_REFERENCES = {
    "notebooks": ["Kaggle Notebooks", "Notebooks"],
    "datasets": ["Kaggle Datasets", "Datasets"],
    "models": ["Kaggle Models"],
    "api": ["Kaggle API", "API"],
    "tpu": ["TPUs"],
    "competitions": ["Kaggle Competitions"],
    "organizations": ["Organizations"],
    "competitions-setup": ["Community Competitions"],
}
INLINE_TAG = re.compile(r"</?(?:strong|code|b|br|em|i|svg|defs|pattern|rect|image|img)\b[^<>]*>")
ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#\d+);")
LINK = re.compile(r" \((https?://[^\s()]+)\)")
ANCHOR_BOUNDARY = re.compile(r"(?:^|[.:;,!?)(“\"]\s|\s[-–]\s|>)")
MAX_ANCHOR_WORDS = 8
PROTECTED = re.compile(r"(<code>.*?</code>|<a [^>]*>.*?</a>|<[^>]+>)")


@dataclass
class Block:
    """One heading or paragraph of a docs page."""

    kind: str  # "h3" | "h4" | "p"
    text: str


@dataclass
class Page:
    """One docs page parsed from a scrape file."""

    slug: str
    title: str
    source_name: str
    source_sha256: str
    blocks: list[Block] = field(default_factory=list)


def slug_from_filename(name: str) -> str:
    """'7_competitions-setup.txt' -> 'competitions-setup'."""
    return Path(name).stem.split("_", 1)[1]


def anchor_id(heading: str) -> str:
    """Heading text -> the fragment id the live site uses ('Types of Notebooks' -> 'types-of-notebooks')."""
    plain = re.sub(r"<[^>]+>", "", html.unescape(heading)).lower()
    return re.sub(r"[^a-z0-9]+", "-", plain).strip("-")


def parse_scrape(text: str) -> list[Block]:
    """Indentation-structured scrape text -> headings and paragraphs (whitespace-only lines dropped)."""
    lines = [line.rstrip() for line in text.splitlines()]
    content = [(i, line) for i, line in enumerate(lines) if line.strip()]
    blocks = []
    for position, (_, line) in enumerate(content):
        indent = len(line) - len(line.lstrip(" "))
        stripped = line.strip()
        next_indent = None
        if position + 1 < len(content):
            following = content[position + 1][1]
            next_indent = len(following) - len(following.lstrip(" "))
        if indent == 0:
            blocks.append(Block("h3", stripped))
        elif indent == 2 and next_indent is not None and next_indent > 2:
            blocks.append(Block("h4", stripped))
        else:
            blocks.append(Block("p", stripped))
    return blocks


def local_href(url: str) -> str:
    """Links into the live docs become root-relative, so the snapshot links to itself."""
    if url.startswith(LIVE_ORIGIN + "/docs"):
        return url[len(LIVE_ORIGIN) :]
    return url


def split_links(line: str) -> list[tuple[str, str | None]]:
    """'see Kaggle Learn (https://…) now' -> [('see ', None), ('Kaggle Learn', 'https://…'), (' now', None)]."""
    segments: list[tuple[str, str | None]] = []
    position = 0
    for match in LINK.finditer(line):
        before = line[position : match.start()]
        boundaries = [m.end() for m in ANCHOR_BOUNDARY.finditer(before)]
        start = max(boundaries) if boundaries else 0
        words = before[start:].split(" ")
        if len(words) > MAX_ANCHOR_WORDS:
            start = len(before) - len(" ".join(words[-MAX_ANCHOR_WORDS:]))
        while start < len(before) and before[start] == " ":
            start += 1
        if before[:start]:
            segments.append((before[:start], None))
        segments.append((before[start:], match.group(1)))
        position = match.end()
    if line[position:]:
        segments.append((line[position:], None))
    return segments


def inline_html(raw: str) -> str:
    """Scrape text -> HTML: surviving inline tags and entities kept, everything else escaped."""
    out, position = [], 0
    for match in re.finditer(f"{INLINE_TAG.pattern}|{ENTITY.pattern}", raw):
        out.append(html.escape(raw[position : match.start()], quote=False))
        out.append(match.group(0))
        position = match.end()
    out.append(html.escape(raw[position:], quote=False))
    return "".join(out)


def link_first_mention(segment: str, phrases: dict[str, list[str]], linked: set[str]) -> str:
    """Link the first mention of another docs page in an HTML segment (never inside a tag, code or link)."""
    for slug, names in phrases.items():
        if slug in linked:
            continue
        for name in names:
            parts = PROTECTED.split(segment)
            for index, part in enumerate(parts):
                found = None if PROTECTED.fullmatch(part) else re.search(rf"\b{re.escape(name)}\b", part)
                if found:
                    parts[index] = f'{part[: found.start()]}<a href="/docs/{slug}">{name}</a>{part[found.end() :]}'
                    linked.add(slug)
                    break
            segment = "".join(parts)
            if slug in linked:
                break
    return segment


def paragraph_html(text: str, phrases: dict[str, list[str]], linked: set[str]) -> str:
    """One scrape line -> the inner HTML of a paragraph, with its links and cross-references."""
    out = []
    for chunk, url in split_links(text):
        if url is None:
            out.append(link_first_mention(inline_html(chunk), phrases, linked))
        else:
            anchor = inline_html(chunk) or html.escape(url)
            out.append(f'<a href="{html.escape(local_href(url))}">{anchor}</a>')
    return "".join(out)


def read_pages(source: Path) -> list[Page]:
    """Parse every ``N_slug.txt`` in ``source`` (sorted by N) into pages."""
    files = sorted(source.glob("*_*.txt"), key=lambda p: int(p.name.split("_", 1)[0]))
    if not files:
        raise FileNotFoundError(f"no '<n>_<slug>.txt' scrape files in {source}")
    pages = []
    for path in files:
        slug = slug_from_filename(path.name)
        if slug not in PAGE_TITLES:
            raise ValueError(f"{path}: unknown docs page '{slug}', add its title to PAGE_TITLES")
        raw = path.read_bytes()
        pages.append(
            Page(slug, PAGE_TITLES[slug], path.name, hashlib.sha256(raw).hexdigest(),
                 parse_scrape(raw.decode("utf-8")))
        )
    return pages


def navigation(pages: list[Page], current: str) -> str:
    """The docs sidebar every page carries (boilerplate the cleaner must drop)."""
    items = [f'<li><a href="/docs"{" aria-current=page" if current == "" else ""}>Docs home</a></li>']
    for page in pages:
        mark = " aria-current=page" if page.slug == current else ""
        items.append(f'<li><a href="/docs/{page.slug}"{mark}>{html.escape(page.title)}</a></li>')
    return '<nav class="docs-nav" aria-label="Documentation">\n<ul>\n' + "\n".join(items) + "\n</ul>\n</nav>"


def document(title: str, canonical_path: str, source_note: str, nav: str, main: str) -> str:
    """Wrap a page body in the shared chrome: head, header, navigation, footer, script."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} | Kaggle Docs</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="snapshot-source" content="{html.escape(source_note)}">
<meta name="snapshot-scrape-date" content="{SCRAPE_DATE}">
<link rel="canonical" href="{LIVE_ORIGIN}{canonical_path}">
<style>body{{font-family:sans-serif;max-width:60rem;margin:auto}} nav{{float:left;width:12rem}} main{{margin-left:14rem}}</style>
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}</script>
</head>
<body>
<header class="site-header"><a href="/">kaggle</a> <a href="/competitions">Competitions</a> <a href="/datasets">Datasets</a> <a href="/code">Code</a> <button>Sign In</button></header>
{nav}
<main>
{main}
</main>
<footer class="site-footer"><p>Offline snapshot for kaggle-qa. Source: {html.escape(source_note)}. Scraped {SCRAPE_DATE}. © Kaggle.</p></footer>
<script>document.querySelectorAll("a").forEach(function (a) {{ a.rel = "noopener"; }});</script>
</body>
</html>
"""


def page_html(page: Page, pages: list[Page]) -> str:
    """One docs page: h1 title, sections (h3), subsections (h4) and paragraphs."""
    phrases = {slug: names for slug, names in CROSS_REFERENCES.items() if slug != page.slug}
    linked: set[str] = set()
    body = [f"<h1>{html.escape(page.title)}</h1>"]
    for block in page.blocks:
        if block.kind == "p":
            body.append(f"<p>{paragraph_html(block.text, phrases, linked)}</p>")
        else:
            body.append(f'<{block.kind} id="{anchor_id(block.text)}">{inline_html(block.text)}</{block.kind}>')
    note = f"{SOURCE_DESCRIPTION}; file {page.source_name} (sha256 {page.source_sha256[:12]})"
    return document(page.title, f"/docs/{page.slug}", note, navigation(pages, page.slug), "\n".join(body))


def index_html(pages: list[Page]) -> str:
    """The /docs landing page linking every page (and the robots-disallowed internal page)."""
    items = "\n".join(
        f'<li><a href="/docs/{page.slug}">{html.escape(page.title)}</a></li>' for page in pages
    )
    main = (
        "<h1>How to Use Kaggle</h1>\n"
        "<p>Help and documentation for the Kaggle platform.</p>\n"
        f"<ul class=\"docs-index\">\n{items}\n</ul>\n"
        f'<p class="staff-only"><a href="/docs/{PRIVATE_PAGE_SLUG}">Docs style guide (staff only)</a></p>'
    )
    return document("How to Use Kaggle", "/docs", SOURCE_DESCRIPTION, navigation(pages, ""), main)


def private_page_html(pages: list[Page]) -> str:
    """A small page under the robots-disallowed prefix: a polite crawler never fetches it."""
    main = (
        "<h1>Docs style guide</h1>\n"
        "<p>This internal page is disallowed by robots.txt. If its text reaches the dataset, "
        "the crawler ignored robots.txt.</p>"
    )
    return document("Docs style guide", f"/docs/{PRIVATE_PAGE_SLUG}", "kaggle-qa test fixture",
                    navigation(pages, ""), main)


def build_site(source: Path, out: Path) -> dict:
    """Write the whole snapshot site into ``out`` and return its manifest."""
    pages = read_pages(source)
    files = {
        "docs.html": index_html(pages),
        f"docs/{PRIVATE_PAGE_SLUG}.html": private_page_html(pages),
        "robots.txt": (
            "# kaggle-qa offline snapshot of kaggle.com/docs\n"
            "User-agent: *\n"
            f"Disallow: {DISALLOWED_PREFIX}\n"
        ),
    }
    for page in pages:
        files[f"docs/{page.slug}.html"] = page_html(page, pages)
    manifest = {
        "source": SOURCE_DESCRIPTION,
        "scrape_date": SCRAPE_DATE,
        "live_origin": LIVE_ORIGIN,
        "builder": "python -m kaggle_qa.pipelines.ingestion.snapshot",
        "robots_disallowed": [DISALLOWED_PREFIX],
        "pages": [
            {"path": f"/docs/{page.slug}", "title": page.title, "source_file": page.source_name,
             "source_sha256": page.source_sha256}
            for page in pages
        ],
        "index": "/docs",
        "private_pages": [f"/docs/{PRIVATE_PAGE_SLUG}"],
    }
    files["snapshot.json"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    for relative, content in sorted(files.items()):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: rebuild the snapshot site."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("data/01_raw/kaggle_docs_2024-03"))
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/kaggle_docs_site"))
    args = parser.parse_args(argv)
    manifest = build_site(args.source, args.out)
    print(f"wrote {len(manifest['pages'])} docs pages + index, robots.txt and snapshot.json to {args.out}")


if __name__ == "__main__":
    main()
