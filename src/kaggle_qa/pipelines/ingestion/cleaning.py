"""HTML → clean markdown-like text: headings, lists, code and link targets kept; chrome dropped.

Output format (what ``clean_pages`` holds and the chunker reads):
``# Heading`` lines (one ``#`` per level), paragraphs and ``- `` list items separated by
blank lines, fenced code blocks for ``<pre>``, inline code in backticks and links as
``text (absolute url)``. Scripts, styles, navigation, headers, footers, forms, images,
``@mentions`` and stray whitespace are removed. Table rows are ``| cell | cell |`` lines.

Doc generators add chrome inside the content area too: Sphinx, MkDocs (Material) and
Docusaurus each mark theirs with known classes (permalink anchors, "Edit on GitHub", version
banners, prev/next links, breadcrumbs, "On this page" sidebars, copy buttons). Those CSS
selectors are data (``cleaning.drop_selectors`` in parameters_ingestion.yml, one list per
generator) and are removed before the text is read; permalink glyphs (``¶``, ``🔗``, a
heading's trailing `` #``) are stripped from prose and headings (never from code), and a block
that matches one of ``cleaning.drop_blocks`` whole ("Edit this page", "Back to top") is dropped.
API signatures (Sphinx ``<dt class="sig" id="click.option">``, ``cleaning.signature_selectors``)
become headings named by their object (``click.option``), one level below the section they sit
in, followed by the full signature as inline code. Links whose target matches one of
``cleaning.text_only_links`` keep only their text (e.g. a local build's links to a copy of the
Python docs).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

HEADINGS = {f"h{level}": level for level in range(1, 7)}
BLOCKS = {
    "p", "div", "section", "article", "main", "body", "ul", "ol", "dl", "dt", "dd", "table",
    "thead", "tbody", "tfoot", "tr", "blockquote", "figure", "figcaption", "details", "summary",
    "hr", "address", "center", "header",
}
SKIPPED_NODES = {"-comment", "img", "picture", "video", "audio", "canvas", "map", "object", "embed"}
MENTION = re.compile(r"(?<![\w@/.])@[A-Za-z0-9_](?:[\w.-]*\w)?")
SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
TRAILING_HASH = re.compile(r"\s+#$")


def remove_mentions(text: str) -> str:
    """Drop ``@user`` handles (not e-mail addresses, not inside URLs)."""
    return MENTION.sub("", text)


def tidy(text: str) -> str:
    """Collapse runs of spaces, trim every line, drop empty lines."""
    lines = (SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def in_article(node: LexborNode) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag == "article":
            return True
        parent = parent.parent
    return False


class _Renderer:
    """Walks the DOM once, emitting blocks (headings, paragraphs, list items, code)."""

    def __init__(self, base_url: str, drop_tags: set[str], glyphs: list[str] = (), drop_blocks: list[str] = (),
                 signatures: set[int] = frozenset(), text_only_links: list[str] = ()):
        self.base_url = base_url
        self.drop = drop_tags | SKIPPED_NODES
        self.glyphs = re.compile("|".join(map(re.escape, glyphs))) if glyphs else None
        self.drop_blocks = [re.compile(pattern) for pattern in drop_blocks]
        self.signatures = signatures  # mem_ids of the API signature nodes
        self.text_only_links = [re.compile(pattern) for pattern in text_only_links]
        self.level = 1  # level of the last <hN> emitted (API signatures go one below)
        self.api_depth = 0  # how deep inside signature descriptions (methods of a class) we are
        self.blocks: list[str] = []
        self.buffer: list[str] = []

    def strip_glyphs(self, text: str) -> str:
        return tidy(self.glyphs.sub("", text)) if self.glyphs else text

    def emit(self, block: str, heading_level: int = 0) -> None:
        """Add one block (heading text without its #s when ``heading_level``), unless it is chrome."""
        block = self.strip_glyphs(block)
        if heading_level:
            block = TRAILING_HASH.sub("", block).strip()
        if not block or any(pattern.fullmatch(block.removeprefix("- ")) for pattern in self.drop_blocks):
            return
        self.blocks.append("#" * heading_level + " " + block if heading_level else block)

    def flush(self) -> None:
        text = tidy("".join(self.buffer))
        self.buffer = []
        if text:
            self.emit(text)

    def dropped(self, node: LexborNode) -> bool:
        if node.tag == "header" and in_article(node):  # an article's own header holds its title (Docusaurus)
            return False
        return node.tag in self.drop or node.attributes.get("role") == "navigation"

    def inline(self, node: LexborNode, in_code: bool = False) -> str:
        """A node's children as inline text."""
        return "".join(self.inline_node(child, in_code) for child in node.iter(include_text=True))

    def inline_node(self, node: LexborNode, in_code: bool = False) -> str:
        """One node as inline text: links as ``text (url)``, code in backticks, ``<br>`` as a newline."""
        tag = node.tag
        if tag == "-text":  # a source line break inside a paragraph is a space (<br> is the line break)
            text = (node.text_content or "").replace("\n", " ")
            return text if in_code else remove_mentions(text)
        if self.dropped(node):
            return ""
        if tag == "br":
            return "\n"
        if tag in ("code", "kbd", "samp", "tt") and not in_code:
            code = SPACES.sub(" ", self.inline(node, in_code=True)).strip()
            return f"`{code}`" if code else ""
        if tag == "a":  # inside code a link is only its text
            return self.inline(node, in_code) if in_code else self.link(node, in_code)
        return self.inline(node, in_code)

    def link(self, node: LexborNode, in_code: bool) -> str:
        """``text (absolute url)``; fragment-only and script links keep just their text."""
        text = SPACES.sub(" ", self.inline(node, in_code)).strip()
        if not text and MENTION.fullmatch((node.text(deep=True) or "").strip()):
            return ""  # a linked @mention goes with its link
        href = (node.attributes.get("href") or "").strip()
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            return text
        target = urljoin(self.base_url, href)
        if text and any(pattern.search(target) for pattern in self.text_only_links):
            return text
        return f"{text} ({target})" if text and text != target else target

    def list_item(self, node: LexborNode) -> None:
        """``- item text``, then any nested list as its own items."""
        nested = []
        parts = []
        for child in node.iter(include_text=True):
            if child.tag in ("ul", "ol"):
                nested.append(child)
            else:
                parts.append(self.inline_node(child))
        text = tidy("".join(parts)).replace("\n", " ")
        if text:
            self.emit(f"- {text}")
        for child in nested:
            self.walk(child)

    def signature(self, node: LexborNode) -> None:
        """An API signature: a heading named by its object (when it has an id), then the signature as code."""
        full = SPACES.sub(" ", self.strip_glyphs((node.text(deep=True) or "").replace("\n", " "))).strip()
        if node.attributes.get("id"):
            name = "".join(part.text(deep=True) for part in node.css(".sig-prename, .sig-name")).strip()
            self.emit(name or node.attributes["id"], heading_level=min(6, self.level + 1 + self.api_depth))
        if full:
            self.emit(f"`{full}`")

    def describes_signature(self, node: LexborNode) -> bool:
        """Is ``node`` the <dd> that describes an API signature (its previous element one of them)?"""
        previous = node.prev
        while previous is not None and previous.tag in ("-text", "-comment"):
            previous = previous.prev
        return previous is not None and previous.mem_id in self.signatures

    def walk(self, node: LexborNode) -> None:
        """Emit the blocks under ``node``."""
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self.buffer.append(remove_mentions((child.text_content or "").replace("\n", " ")))
            elif self.dropped(child):
                continue
            elif tag in HEADINGS:
                self.flush()
                title = tidy(self.inline(child)).replace("\n", " ")
                if title:
                    self.level = HEADINGS[tag]
                    self.emit(title, heading_level=HEADINGS[tag])
            elif child.mem_id in self.signatures:
                self.flush()
                self.signature(child)
            elif tag == "dt" and "field-list" in (child.parent.attributes.get("class") or "").split():
                self.flush()  # a Sphinx field name ("Parameters") introduces its list: a lead-in
                name = tidy(self.inline(child)).replace("\n", " ").rstrip(":")
                if name:
                    self.emit(name + ":")
            elif tag == "dd" and self.describes_signature(child):
                self.flush()
                self.api_depth += 1
                self.walk(child)
                self.flush()
                self.api_depth -= 1
            elif tag == "tr":
                self.flush()
                cells = [tidy(self.inline(cell)).replace("\n", " ") for cell in child.iter() if cell.tag in ("td", "th")]
                if any(cells):
                    self.emit("| " + " | ".join(cells) + " |")
            elif tag == "pre":
                self.flush()
                code = (child.text(deep=True) or "").strip("\n")
                if code.strip():
                    self.blocks.append(f"```\n{code}\n```")
            elif tag == "li":
                self.flush()
                self.list_item(child)
            elif tag in BLOCKS:
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self.buffer.append(self.inline_node(child))


def selector_list(selectors: list[str] | dict[str, list[str]] | None) -> list[str]:
    """cleaning.drop_selectors as one list (it is given per generator: {sphinx: [...], mkdocs: [...]})."""
    if isinstance(selectors, dict):
        return [selector for group in selectors.values() for selector in group or []]
    return list(selectors or [])


def html_to_text(
    html: str, base_url: str, drop_tags: list[str], content_selectors: list[str],
    drop_selectors: list[str] | dict[str, list[str]] | None = None, glyphs: list[str] = (),
    drop_blocks: list[str] = (), signature_selectors: list[str] = (), text_only_links: list[str] = (),
) -> str:
    """Clean one HTML page into markdown-like text (see the module docstring)."""
    tree = LexborHTMLParser(html)
    for selector in selector_list(drop_selectors):
        for node in tree.css(selector):
            node.decompose()
    for node in tree.css("pre br"):  # code lines as <span>…<br></span> (Docusaurus, Prism)
        node.replace_with("\n")
    signatures = {node.mem_id for selector in signature_selectors for node in tree.css(selector)}
    root = None
    for selector in content_selectors:
        root = tree.css_first(selector)
        if root is not None:
            break
    if root is None:
        root = tree.body or tree.root
    if root is None:
        return ""
    renderer = _Renderer(base_url, set(drop_tags), list(glyphs), list(drop_blocks), signatures, list(text_only_links))
    renderer.walk(root)
    renderer.flush()
    return "\n\n".join(renderer.blocks)


def page_title(html: str) -> str:
    """The page's first ``<h1>``, or its ``<title>``."""
    tree = LexborHTMLParser(html)
    for node in tree.css("h1 a.headerlink, h1 a.hash-link"):
        node.decompose()
    for selector in ("h1", "title"):
        node = tree.css_first(selector)
        if node is not None and node.text(strip=True):
            return TRAILING_HASH.sub("", SPACES.sub(" ", node.text(strip=True))).rstrip("¶🔗 ")
    return ""
