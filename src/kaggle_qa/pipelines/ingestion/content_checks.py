"""Is a response labelled ``text/html`` really readable text? Binary bytes and broken encodings.

A server may send an image or an archive as ``text/html``, or label cp1252 bytes as UTF-8.
Scrapy then decodes them with replacement characters and the garbage would become chunks.
:func:`check_text` says what is wrong (a skip reason and a detail) or returns the encoding
that decodes the body without a single error.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from w3lib.encoding import html_body_declared_encoding, resolve_encoding

SAMPLE_BYTES = 65536  # the share of control bytes is measured on the first 64 KiB
MAX_CONTROL_SHARE = 0.01  # text has (almost) none: tab, LF, CR and FF are not counted
CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_CONTROL_TABLE = bytes(range(256))


@dataclass(frozen=True)
class TextCheck:
    """Outcome of :func:`check_text`: a skip (``reason`` set) or the encoding to decode with."""

    encoding: str | None = None
    reason: str | None = None  # "binary" | "bad-encoding"
    detail: str = ""


def control_share(body: bytes) -> float:
    """Share of control bytes (NUL, BEL, ESC, …, not tab/newline/CR/FF) in the sample."""
    sample = body[:SAMPLE_BYTES]
    if not sample:
        return 0.0
    return (len(sample) - len(sample.translate(_CONTROL_TABLE, CONTROL_BYTES))) / len(sample)


def _is_wide_unicode(encoding: str) -> bool:
    """UTF-16/32 text is full of NUL bytes by design: the control-byte test does not apply."""
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _first_error(body: bytes, encoding: str) -> UnicodeDecodeError | None:
    try:
        body.decode(encoding)
    except UnicodeDecodeError as error:
        return error
    return None


def check_text(body: bytes, encoding: str) -> TextCheck:
    """Binary, undecodable, or the encoding to use (the declared one, or the page's own meta charset).

    ``encoding`` is the one Scrapy chose (Content-Type header, else BOM or ``<meta charset>``,
    else UTF-8/cp1252 by trial). When the body is not valid in it but the document's own
    ``<meta charset>`` names another encoding that decodes it cleanly, that one is used
    (a header that contradicts the page is the usual cause); otherwise the page is skipped,
    never decoded with replacement characters.
    """
    encoding = resolve_encoding(encoding) or encoding
    if not _is_wide_unicode(encoding):
        share = control_share(body)
        if share > MAX_CONTROL_SHARE:
            return TextCheck(reason="binary", detail=f"{share:.0%} control bytes in the first "
                                                     f"{min(len(body), SAMPLE_BYTES)} bytes")
    error = _first_error(body, encoding)
    if error is None:
        return TextCheck(encoding=encoding)
    declared = html_body_declared_encoding(body)
    declared = resolve_encoding(declared) if declared else None
    if declared and codecs.lookup(declared).name != codecs.lookup(encoding).name and not _first_error(body, declared):
        return TextCheck(encoding=declared, detail=f"not valid {encoding}; decoded with the page's meta charset {declared}")
    bad = body[error.start : error.start + 1].hex()
    return TextCheck(reason="bad-encoding", detail=f"not valid {encoding}: byte 0x{bad} at offset {error.start}")
