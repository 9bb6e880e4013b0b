"""HTML → clean markdown-like text: headings, lists, code and link targets kept; chrome dropped.

Output format (what ``clean_pages`` holds and the chunker reads):
``# Heading`` lines (one ``#`` per level), paragraphs and ``- `` list items separated by
blank lines, fenced code blocks for ``<pre>``, inline code in backticks and links as
``text (absolute url)``. Scripts, styles, navigation, headers, footers, forms, images,
``@mentions`` and stray whitespace are removed.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

HEADINGS = {f"h{level}": level for level in range(1, 7)}
BLOCKS = {
    "p", "div", "section", "article", "main", "body", "ul", "ol", "dl", "dt", "dd", "table",
    "thead", "tbody", "tfoot", "tr", "blockquote", "figure", "figcaption", "details", "summary",
    "hr", "address", "center",
}
SKIPPED_NODES = {"-comment", "img", "picture", "video", "audio", "canvas", "map", "object", "embed"}
MENTION = re.compile(r"(?<![\w@/.])@[A-Za-z0-9_](?:[\w.-]*\w)?")
SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")


def remove_mentions(text: str) -> str:
    """Drop ``@user`` handles (not e-mail addresses, not inside URLs)."""
    return MENTION.sub("", text)


def tidy(text: str) -> str:
    """Collapse runs of spaces, trim every line, drop empty lines."""
    lines = (SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


class _Renderer:
    """Walks the DOM once, emitting blocks (headings, paragraphs, list items, code)."""

    def __init__(self, base_url: str, drop_tags: set[str]):
        self.base_url = base_url
        self.drop = drop_tags | SKIPPED_NODES
        self.blocks: list[str] = []
        self.buffer: list[str] = []

    def flush(self) -> None:
        text = tidy("".join(self.buffer))
        self.buffer = []
        if text:
            self.blocks.append(text)

    def dropped(self, node: LexborNode) -> bool:
        return node.tag in self.drop or node.attributes.get("role") == "navigation"

    def inline(self, node: LexborNode, in_code: bool = False) -> str:
        """A node's children as inline text."""
        return "".join(self.inline_node(child, in_code) for child in node.iter(include_text=True))

    def inline_node(self, node: LexborNode, in_code: bool = False) -> str:
        """One node as inline text: links as ``text (url)``, code in backticks, ``<br>`` as a newline."""
        tag = node.tag
        if tag == "-text":
            text = node.text_content or ""
            return text if in_code else remove_mentions(text)
        if self.dropped(node):
            return ""
        if tag == "br":
            return "\n"
        if tag in ("code", "kbd", "samp", "tt") and not in_code:
            code = SPACES.sub(" ", self.inline(node, in_code=True)).strip()
            return f"`{code}`" if code else ""
        if tag == "a":
            return self.link(node, in_code)
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
            self.blocks.append(f"- {text}")
        for child in nested:
            self.walk(child)

    def walk(self, node: LexborNode) -> None:
        """Emit the blocks under ``node``."""
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self.buffer.append(remove_mentions(child.text_content or ""))
            elif self.dropped(child):
                continue
            elif tag in HEADINGS:
                self.flush()
                title = tidy(self.inline(child)).replace("\n", " ")
                if title:
                    self.blocks.append("#" * HEADINGS[tag] + " " + title)
            elif tag == "pre":
                self.flush()
                code = (child.text(deep=True) or "").strip("\n")
                if code.strip():
                    self.blocks.append(f"```\n{code}\n```")
            elif tag == "li":
                self.flush()
                self.list_item(child)
            elif tag in ("td", "th"):
                self.buffer.append(" " + self.inline(child) + " |")
            elif tag in BLOCKS:
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self.buffer.append(self.inline_node(child))


def html_to_text(html: str, base_url: str, drop_tags: list[str], content_selectors: list[str]) -> str:
    """Clean one HTML page into markdown-like text (see the module docstring)."""
    tree = LexborHTMLParser(html)
    root = None
    for selector in content_selectors:
        root = tree.css_first(selector)
        if root is not None:
            break
    if root is None:
        root = tree.body or tree.root
    if root is None:
        return ""
    renderer = _Renderer(base_url, set(drop_tags))
    renderer.walk(root)
    renderer.flush()
    return "\n\n".join(renderer.blocks)


def page_title(html: str) -> str:
    """The page's first ``<h1>``, or its ``<title>``."""
    tree = LexborHTMLParser(html)
    for selector in ("h1", "title"):
        node = tree.css_first(selector)
        if node is not None and node.text(strip=True):
            return SPACES.sub(" ", node.text(strip=True))
    return ""
