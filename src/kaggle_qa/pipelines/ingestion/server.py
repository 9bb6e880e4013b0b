"""Serve a static site folder over HTTP on a local port, with clean URLs (``/docs`` → ``docs.html``).

Any folder of static HTML works: the bundled default snapshot (clean URLs), or a vendored docs
manual built by Sphinx, MkDocs or Docusaurus (``index.html``, ``api.html``, ``_modules/…``).
``mount_path`` serves the folder under a URL path (``/en/8.1.x/`` → the folder's root), so
the local copy has the same paths as the site it mirrors; other paths answer 404.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


def normalise_mount(mount_path: str | None) -> str:
    """'/en/8.1.x' or '/en/8.1.x/' → '/en/8.1.x/'; None or '' → '/'."""
    path = (mount_path or "/").strip()
    if not path.startswith("/"):
        raise ValueError(f"params:ingestion.snapshot.mount_path must start with '/', got {mount_path!r}")
    return path.rstrip("/") + "/"


class CleanUrlHandler(SimpleHTTPRequestHandler):
    """Static files where ``/a/b`` serves ``a/b.html`` (as static hosts do) and pages are UTF-8 HTML."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".html": "text/html; charset=utf-8"}
    mount = "/"

    def __init__(self, *args, mount: str = "/", **kwargs):
        self.mount = mount
        super().__init__(*args, **kwargs)

    def outside_mount(self) -> bool:
        url_path = urlsplit(self.path).path
        return not (url_path + "/").startswith(self.mount)

    def send_head(self):
        """404 for a path outside the mount path; otherwise the base class's static file."""
        if self.outside_mount():
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        """Strip the mount path, then map an extensionless URL path onto its ``.html`` file when it exists."""
        url_path = urlsplit(path).path
        local = super().translate_path("/" + url_path[len(self.mount):])
        candidate = Path(local.rstrip("/") + ".html")
        if not Path(local).is_file() and candidate.is_file():
            return str(candidate)
        return local

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        """Route access logs to logging at DEBUG instead of stderr."""
        logger.debug("snapshot server: " + format, *args)


@contextmanager
def serve_site(folder: str | Path, host: str = "127.0.0.1", port: int = 0, mount_path: str = "/") -> Iterator[str]:
    """Serve ``folder`` under ``mount_path`` on ``host`` (port 0 = any free port), yield its origin; always stops."""
    root = Path(folder).resolve()
    if not root.is_dir() or not any(root.iterdir()):
        raise FileNotFoundError(
            f"site folder {root} (params:ingestion.snapshot.path) is missing or empty; the bundled default "
            "snapshot is rebuilt with `python -m kaggle_qa.pipelines.ingestion.snapshot`"
        )
    mount = normalise_mount(mount_path)
    server = ThreadingHTTPServer((host, port), partial(CleanUrlHandler, directory=str(root), mount=mount))
    thread = threading.Thread(target=server.serve_forever, name="snapshot-server", daemon=True)
    thread.start()
    origin = f"http://{host}:{server.server_address[1]}"
    logger.info("Serving %s at %s%s", root, origin, mount)
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        logger.info("Stopped the snapshot server at %s", origin)
