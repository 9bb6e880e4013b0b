"""Answer units of a chunk: what a complete answer is made of in technical docs.

Docs put answers in lists, code blocks, tables and "Default:" lines after a lead-in sentence.
A sentence alone is then no answer ("To dump into a JSON file:" without the command), so the
offline teacher answers with a *unit*:

- a lead-in (a sentence ending in ":") with the block it introduces: ``- `` items, a fenced
  code block, a table (``|`` rows), or, where the cleaner left a list as plain lines, the lines
  that follow it;
- a setting or parameter with its ``Default:`` line and the sentences that say what it does;
- a sentence with the ones after it that continue it ("It …", "Then …", the next step of a
  how-to).

A unit longer than the bounds (``answer_max_words`` / ``answer_max_lines``) is not cut: a cut
list or code block is no complete answer, so no question is asked of it.

Chunk text follows ingestion's contract: one paragraph, heading, list item or table row per
line; a code block fenced by ``````` lines, whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaggle_qa.text import split_sentences

from ..grammar import LINK_TARGET, n_words, tidy

FENCE = re.compile(r"^\s*(```|~~~)")
LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)])\s+\S")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
DEFAULT_LINE = re.compile(r"^(?:Default(?: value)?|Defaults to)\s*:?\s*(?P<value>\S.{0,120}?)\.?$")
# A sentence that continues the one before it: the next step of a how-to, or a consequence.
CONTINUES = re.compile(r"^(?:Then|Next|After that|Afterwards|Finally|Now|Lastly|Second|Third)\b,?", re.I)
# A setting's or parameter's name: CONSTANT_CASE, `code`, or a dotted / snake_case identifier.
IDENTIFIER = re.compile(r"^`?(?P<name>[A-Za-z_][\w.\-]*(?:\(\))?)`?$")


@dataclass(frozen=True)
class Block:
    """A run of lines of one kind: ``para`` (one line of prose), ``list``, ``code``, ``table``."""

    kind: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Unit:
    """A complete answer: its text, the sentence a question is asked of (a lead-in without its
    colon, or a setting's name), and what kind of unit it is (``lead_in`` or ``setting``)."""

    kind: str
    anchor: str
    text: str
    name: str | None = None
    default: str | None = None


def blocks(text: str) -> list[Block]:
    """The chunk's lines grouped into blocks (a fenced code block whole, even unclosed)."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if FENCE.match(lines[j])), len(lines) - 1)
            found.append(Block("code", tuple(lines[i : end + 1])))
            i = end + 1
            continue
        for kind, pattern in (("list", LIST_ITEM), ("table", TABLE_ROW)):
            if pattern.match(line):
                j = i
                while j < len(lines) and lines[j].strip() and pattern.match(lines[j]):
                    j += 1
                found.append(Block(kind, tuple(ln.rstrip() for ln in lines[i:j])))
                i = j
                break
        else:
            found.append(Block("para", (line.strip(),)))
            i += 1
    return found


def numbered_sentences(text: str) -> list[tuple[int, str]]:
    """The chunk's sentences outside code blocks and tables (code and table cells are no claims),
    each with a number for the block it stands in: sentences of one paragraph share it,
    consecutive paragraphs differ by one when no code block, table or list stands between them,
    and each list item counts as a block of its own."""
    found, number = [], 0
    for block in blocks(text):
        if block.kind == "para":
            found += [(number, sentence) for sentence in split_sentences(block.text)]
            number += 1
        elif block.kind == "list":
            for line in block.lines:
                found += [(number, sentence) for sentence in split_sentences(line)]
                number += 1
            number += 1
        else:
            number += 2
    return found


def prose_sentences(text: str) -> list[str]:
    """The chunk's sentences outside code blocks and tables (:func:`numbered_sentences`)."""
    return [sentence for _, sentence in numbered_sentences(text)]


def sentence_paragraphs(text: str) -> list[int]:
    """For each of :func:`prose_sentences`, the number of its block (:func:`numbered_sentences`)."""
    return [number for number, _ in numbered_sentences(text)]


# A caption line that introduces an example ("Example:", "Example usage:", "For example:"): between
# a lead-in and its block it belongs to the lead-in's unit; right after a paragraph it brings the
# paragraph's example into a passage answer (teachers/offline.py).
CAPTION = re.compile(r"^(?:(?:An|For) )?(?:examples?|usage|example usage|for instance|e\.g\.)\s*:$", re.I)


def _label(block: Block) -> bool:
    """A caption paragraph (:data:`CAPTION`)."""
    return block.kind == "para" and bool(CAPTION.match(block.lines[0].strip()))


def _plain(line: str) -> str:
    """A docs line without link targets ("Learn (https://…)" → "Learn")."""
    return tidy(LINK_TARGET.sub("", line))


def _plain_item(line: str) -> bool:
    """Whether a prose line reads as an entry of a list the cleaner flattened ("Leaking test data
    into the training data", "`cmd`: does X"): one sentence, not closed by a period, no lead-in or
    question of its own. A line of running prose ends the list."""
    line = line.strip()
    return len(split_sentences(line)) == 1 and not line.endswith((".", ":", "?", "!"))


def _fits(lines: list[str], max_words: int, max_lines: int) -> bool:
    return len(lines) <= max_lines and n_words(" ".join(lines)) <= max_words


def lead_in_units(text: str, max_words: int, max_lines: int) -> list[Unit]:
    """Every lead-in of the chunk with the block it introduces, when the whole fits the bounds.

    A lead-in (or any paragraph's last sentence right before a code block) followed by a list,
    code block or table takes the whole block (and a code block
    right after a list, or a list after a code block); one followed by prose lines (a list the
    cleaner flattened) takes the lines up to the next lead-in, question or blank line, as many
    as fit. A lead-in whose block does not fit, or that ends the chunk, gives no unit.
    """
    found = blocks(text)
    units = []
    for index, block in enumerate(found):
        following = found[index + 1 :]
        # a paragraph right before a code block leads into it even without a colon ("Install it with pip.")
        into_code = bool(following) and following[0].kind == "code"
        if block.kind != "para" or not (block.lines[0].rstrip().endswith(":") or into_code):
            continue
        sentences = split_sentences(block.lines[0])
        if not sentences:
            continue
        lead = _plain(sentences[-1])
        label: list[str] = []
        if len(following) > 1 and _label(following[0]) and following[1].kind in ("list", "code", "table"):
            # "This can be accomplished with the `multiple` flag:", "Example:", the code: one unit
            label, following = [following[0].lines[0].strip()], following[1:]
        body: list[str] = []
        if following and following[0].kind in ("list", "code", "table"):
            body = [*label, *following[0].lines]
            if len(following) > 1 and {following[0].kind, following[1].kind} == {"list", "code"}:
                body += following[1].lines
            if not _fits([lead, *body], max_words, max_lines):
                continue  # a cut list or code block is no complete answer
        else:
            for item in following:
                line = item.lines[0]
                if item.kind != "para" or not _plain_item(line):
                    break
                if not _fits([lead, *body, line], max_words, max_lines):
                    body = []  # the list goes on past the bounds: no complete answer
                    break
                body.append(_plain(line))
        if body:
            units.append(Unit("lead_in", lead, "\n".join([lead, *body])))
    return units


def setting_units(text: str, heading: str | None, max_words: int, max_lines: int) -> list[Unit]:
    """A setting or parameter with its default and meaning: a ``Default: X`` line, the name it
    belongs to (the line before it when that is an identifier, else the section heading when
    that is one), and the prose sentences around it that say what it does."""
    found = blocks(text)
    units = []
    for index, block in enumerate(found):
        match = DEFAULT_LINE.match(block.lines[0]) if block.kind == "para" else None
        if not match:
            continue
        name = None
        before = found[index - 1] if index else None
        if before is not None and before.kind == "para" and (m := IDENTIFIER.match(before.lines[0].strip())):
            name = m["name"]
        elif heading and (m := IDENTIFIER.match(heading.strip())):
            name = m["name"]
        if not name:
            continue
        meaning = []
        for item in found[index + 1 :]:
            if item.kind != "para" or DEFAULT_LINE.match(item.lines[0]) or IDENTIFIER.match(item.lines[0].strip()):
                break
            for sentence in split_sentences(item.lines[0]):
                if not _fits([*meaning, sentence], max_words - n_words(block.lines[0]), max_lines - 1):
                    break
                meaning.append(_plain(sentence))
            if meaning:
                break  # the description's first paragraph
        if not meaning:
            continue
        default = match["value"].strip()
        answer = " ".join(meaning) + f"\nDefault: {default}"
        units.append(Unit("setting", name, answer, name=name, default=default))
    return units


def incomplete_answer(answer: str, max_words: int, max_lines: int) -> str | None:
    """Why an answer is not a complete one, or None: a bare lead-in (it ends with ":"), a code
    block cut open, or more than the bounds allow (it would be cut when trained on)."""
    text = answer.rstrip()
    if text.endswith(":"):
        return "a lead-in without what it introduces"
    if sum(bool(FENCE.match(line)) for line in text.splitlines()) % 2:
        return "a code block cut open"
    if n_words(text) > max_words or len(text.splitlines()) > max_lines:
        return f"longer than {max_words} words / {max_lines} lines"
    return None
