"""Heading-aware chunking of clean page text into context-sized pieces, never mid-sentence.

A page's clean text (see :mod:`.cleaning`) is split into sections at its ``#`` headings;
each section's blocks become *units* that are never cut: a sentence, a list item, a table
row (``| … |``), a fenced code part. Units are packed greedily into chunks of about
``target_words`` words, never more than ``max_words`` unless one unit alone is longer. A
section's short tail (under ``min_words``) joins the chunk before it when that stays within
``max_words``.

Answers in technical docs often sit after a lead-in: "To dump into a JSON file:" followed by
a command, a list or a table. A sentence ending in ":" and the list items / table rows / code
block right after it form one unit, rendered as the lead-in line directly followed by its
``- `` items, ``| `` rows or fenced code, so a reader of the chunk (the offline teacher) sees
the whole answer. A lead-in with a list or table longer than ``max_words`` keeps as many items
as fit; the rest follow as units of their own. A code block longer than ``max_code_lines`` is
split at line boundaries into parts, each fenced (never mid-line). A "Default: …" line stays
with the unit before it (the setting it belongs to), or the one after when it comes first.
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


DEFAULT_LINE = re.compile(r"^(?:Defaults?(?: value)?\s*[:=]|Defaults? to\b)", re.IGNORECASE)
FENCE = "```"

Unit = list[tuple[int, str]]  # (render block index, text) pieces: one block's pieces join by spaces


def block_kind(block: str) -> str:
    """'code' | 'item' | 'row' | 'default' | 'text'."""
    if block.startswith(FENCE):
        return "code"
    if block.startswith("- "):
        return "item"
    if block.startswith("| ") and block.rstrip().endswith("|"):
        return "row"
    if DEFAULT_LINE.match(block):
        return "default"
    return "text"


def code_parts(block: str, max_code_lines: int) -> list[str]:
    """A fenced code block as fenced parts of at most ``max_code_lines`` lines, split between lines."""
    lines = block.split("\n")
    opening = lines[0]
    body = lines[1:-1] if len(lines) > 1 and lines[-1].strip() == FENCE else lines[1:]
    if len(body) <= max_code_lines:
        return [block]
    return [
        "\n".join([opening, *body[start : start + max_code_lines], FENCE])
        for start in range(0, len(body), max_code_lines)
    ]


def code_line_share(text: str) -> float:
    """Share of a clean page's non-empty lines that are inside fenced code (fence lines not counted)."""
    code = other = 0
    in_fence = False
    for line in text.split("\n"):
        if line.startswith(FENCE):
            in_fence = not in_fence
        elif line.strip():
            code, other = (code + 1, other) if in_fence else (code, other + 1)
    return code / max(code + other, 1)


def section_units(blocks: list[str], max_words: int, max_code_lines: int) -> list[Unit]:
    """The never-cut units of one section, lead-ins joined to what they introduce."""
    pieces: list[tuple[str, Unit]] = []  # (kind, unit) in reading order
    index = 0
    for block in blocks:
        kind = block_kind(block)
        if kind == "code":
            for part in code_parts(block, max_code_lines):
                pieces.append(("code", [(index, part)]))
                index += 1
        elif kind == "text":
            for sentence in split_sentences(block):
                pieces.append(("text", [(index, sentence)]))
            index += 1
        elif kind == "item" and word_count(block) > max_words:  # a long item is cut between its sentences
            for sentence in split_sentences(block):
                pieces.append(("item", [(index, sentence)]))
            index += 1
        else:
            pieces.append((kind, [(index, " ".join(block.split()))]))
            index += 1

    units: list[Unit] = []
    position = 0
    while position < len(pieces):
        kind, unit = pieces[position]
        following = pieces[position + 1][0] if position + 1 < len(pieces) else None
        if kind == "text" and unit[-1][1].rstrip().endswith(":") and following in ("item", "row", "code"):
            unit = list(unit)
            position += 1
            if following == "code":  # the lead-in and the (first part of the) code it introduces
                unit += pieces[position][1]
                position += 1
            else:  # the lead-in and as many of its items / rows as fit
                while position < len(pieces) and pieces[position][0] == following:
                    member = pieces[position][1]
                    if len(unit) > 1 and _words(unit) + _words(member) > max_words:
                        break
                    unit += member
                    position += 1
            units.append(unit)
            continue
        if kind == "default":
            if units:  # with the setting before it
                units[-1] = units[-1] + unit
            elif position + 1 < len(pieces):  # it comes first: with the unit after it
                pieces[position + 1] = (pieces[position + 1][0], unit + pieces[position + 1][1])
            else:
                units.append(unit)
            position += 1
            continue
        units.append(unit)
        position += 1
    return units


def pack_units(units: list[Unit], target_words: int, max_words: int, min_words: int) -> list[str]:
    """Pack whole units into chunks of about ``target_words`` words (see the module docstring)."""
    chunks: list[list[Unit]] = []
    current: list[Unit] = []
    for unit in units:
        size = sum(_words(u) for u in current)
        if current and (size >= target_words or size + _words(unit) > max_words):
            chunks.append(current)
            current = []
        current.append(unit)
    if current:
        chunks.append(current)
    if len(chunks) > 1 and _size(chunks[-1]) < min_words:
        previous, tail = chunks[-2], chunks[-1]
        if _size(previous) + _size(tail) <= max_words:
            chunks[-2:] = [previous + tail]
        else:  # borrow whole units from the chunk before, so the tail has some context
            while (
                _size(tail) < min_words
                and len(previous) > 1
                and _size(previous[:-1]) >= min_words
                and _size(tail) + _words(previous[-1]) <= max_words
            ):
                tail.insert(0, previous.pop())
    return [_render([piece for unit in chunk for piece in unit]) for chunk in chunks]


def pack_sentences(blocks: list[list[str]], target_words: int, max_words: int, min_words: int) -> list[str]:
    """Pack whole sentences (given per block) into chunks of about ``target_words`` words."""
    units = [[(index, sentence)] for index, block in enumerate(blocks) for sentence in block]
    return pack_units(units, target_words, max_words, min_words)


def _words(unit: Unit) -> int:
    return sum(word_count(text) for _, text in unit)


def _size(chunk: list[Unit]) -> int:
    return sum(_words(unit) for unit in chunk)


def _render(chunk: Unit) -> str:
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


def chunk_page(
    url: str, title: str, text: str, target_words: int, max_words: int, min_words: int, max_code_lines: int = 30,
) -> list[dict]:
    """All chunks of one clean page, in reading order."""
    chunks = []
    for section in sections(text):
        units = section_units(section.blocks, max_words, max_code_lines)
        for piece in pack_units(units, target_words, max_words, min_words):
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
