"""Serve a static site folder over HTTP on a local port, with clean URLs (``/docs`` → ``docs.html``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

logger = logging.getLogger(__name__)


class CleanUrlHandler(SimpleHTTPRequestHandler):
    """Static files where ``/a/b`` serves ``a/b.html`` (as static hosts do) and pages are UTF-8 HTML."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".html": "text/html; charset=utf-8"}

    def translate_path(self, path: str) -> str:
        """Map an extensionless URL path onto its ``.html`` file when that file exists."""
        local = super().translate_path(path)
        candidate = Path(local.rstrip("/") + ".html")
        if not Path(local).is_file() and candidate.is_file():
            return str(candidate)
        return local

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        """Route access logs to logging at DEBUG instead of stderr."""
        logger.debug("snapshot server: " + format, *args)


@contextmanager
def serve_site(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``folder`` on ``host`` (port 0 = any free port) and yield its origin; always stops it."""
    root = Path(folder).resolve()
    if not root.is_dir() or not any(root.iterdir()):
        raise FileNotFoundError(
            f"site folder {root} is missing or empty; the bundled snapshot is rebuilt with "
            "`python -m kaggle_qa.pipelines.ingestion.snapshot`"
        )
    server = ThreadingHTTPServer((host, port), partial(CleanUrlHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="snapshot-server", daemon=True)
    thread.start()
    origin = f"http://{host}:{server.server_address[1]}"
    logger.info("Serving %s at %s", root, origin)
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        logger.info("Stopped the snapshot server at %s", origin)
