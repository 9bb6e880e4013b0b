"""Heading-aware chunking of clean page text into context-sized pieces, never mid-sentence.

A page's clean text (see :mod:`.cleaning`) is split into sections at its ``#`` headings;
each section's blocks (paragraphs, list items, code) are split into sentences, and whole
sentences are packed greedily into chunks of about ``target_words`` words, never more than
``max_words`` unless one sentence alone is longer (it is never cut). A section's short tail
(under ``min_words``) joins the chunk before it when that stays within ``max_words``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from kaggle_qa.text import split_sentences  # the project's one sentence splitter

HEADING = re.compile(r"^(#{1,6}) (.+)$")


@dataclass
class Section:
    """The blocks under one heading path."""

    heading_path: list[str]
    blocks: list[str]


def sections(text: str) -> list[Section]:
    """Split clean text into sections at headings; code fences are never parsed as headings."""
    result: list[Section] = []
    path: list[tuple[int, str]] = []
    blocks: list[str] = []
    for block in split_blocks(text):
        heading = HEADING.match(block)
        if heading and "\n" not in block:
            if blocks:
                result.append(Section([title for _, title in path], blocks))
                blocks = []
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, heading.group(2).strip())]
        else:
            blocks.append(block)
    if blocks:
        result.append(Section([title for _, title in path], blocks))
    return result


def split_blocks(text: str) -> list[str]:
    """Blank-line separated blocks, keeping a fenced code block whole even if it holds blank lines."""
    blocks, current, in_fence = [], [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                blocks.append("\n".join(current))
                current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def word_count(text: str) -> int:
    return len(text.split())


def pack_sentences(blocks: list[list[str]], target_words: int, max_words: int, min_words: int) -> list[str]:
    """Pack whole sentences (given per block) into chunks of about ``target_words`` words."""
    units = [(index, sentence) for index, block in enumerate(blocks) for sentence in block]
    chunks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for unit in units:
        size = _words(current)
        if current and (size >= target_words or size + word_count(unit[1]) > max_words):
            chunks.append(current)
            current = []
        current.append(unit)
    if current:
        chunks.append(current)
    if len(chunks) > 1 and _words(chunks[-1]) < min_words:
        previous, tail = chunks[-2], chunks[-1]
        if _words(previous) + _words(tail) <= max_words:
            chunks[-2:] = [previous + tail]
        else:  # borrow whole sentences from the chunk before, so the tail has some context
            while (
                _words(tail) < min_words
                and len(previous) > 1
                and _words(previous[:-1]) >= min_words
                and _words(tail) + word_count(previous[-1][1]) <= max_words
            ):
                tail.insert(0, previous.pop())
    return [_render(chunk) for chunk in chunks]


def _words(chunk: list[tuple[int, str]]) -> int:
    return sum(word_count(sentence) for _, sentence in chunk)


def _render(chunk: list[tuple[int, str]]) -> str:
    """Sentences of one block joined by spaces, blocks by newlines."""
    lines: list[str] = []
    last = None
    for index, sentence in chunk:
        if index == last:
            lines[-1] += " " + sentence
        else:
            lines.append(sentence)
        last = index
    return "\n".join(lines)


def chunk_id(url: str, heading_path: list[str], text: str) -> str:
    """Stable id: the same url, heading path and text always give the same id."""
    key = "\n".join([url, " > ".join(heading_path), text])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def chunk_page(url: str, title: str, text: str, target_words: int, max_words: int, min_words: int) -> list[dict]:
    """All chunks of one clean page, in reading order."""
    chunks = []
    for section in sections(text):
        sentences = [split_sentences(block) for block in section.blocks]
        for piece in pack_sentences(sentences, target_words, max_words, min_words):
            chunks.append(
                {
                    "chunk_id": chunk_id(url, section.heading_path, piece),
                    "url": url,
                    "title": title,
                    "heading_path": section.heading_path,
                    "text": piece,
                    "n_words": word_count(piece),
                }
            )
    return chunks
