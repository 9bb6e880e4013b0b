"""Fixtures for the ingestion tests: parameters from conf/base and a misbehaving HTTP site."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from .hostile_site import serve

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT = PROJECT_ROOT / "data" / "01_raw" / "kaggle_docs_site"
SCRAPE = PROJECT_ROOT / "data" / "01_raw" / "kaggle_docs_2024-03"  # vendored: a clone is enough


def base_ingestion_params() -> dict:
    """conf/base's `ingestion` parameters, with the snapshot path made absolute and fast timeouts."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text())["ingestion"]
    params = copy.deepcopy(params)
    params["snapshot"]["path"] = str(SNAPSHOT)
    params["crawl"] |= {"download_timeout": 2, "retry_times": 1, "log_level": "WARNING"}
    return params


@pytest.fixture
def ingestion_params() -> dict:
    return base_ingestion_params()


@pytest.fixture(scope="module")
def ingestion_params_module() -> dict:
    """The same, for module-scoped fixtures (one crawl shared by several tests)."""
    return base_ingestion_params()


BAD_SITE_INDEX = b"""<!DOCTYPE html><html><head><title>Bad site</title></head><body><main>
<h1>Bad site</h1><p>Links that go wrong in every way a crawler meets.</p>
<ul>
<li><a href="/docs/ok">A good page</a></li>
<li><a href="/docs/server-error">Served 500</a></li>
<li><a href="/docs/slow">Too slow</a></li>
<li><a href="/docs/data.csv">A CSV file</a></li>
<li><a href="/docs/missing">A broken link</a></li>
<li><a href="/docs/empty">An empty page</a></li>
<li><a href="/docs/malformed">Malformed but readable</a></li>
<li><a href="/docs/private/secret">Disallowed by robots.txt</a></li>
<li><a href="https://example.org/elsewhere">Another site</a></li>
<li><a href="/blog/post">Same host, outside /docs</a></li>
<li><a href="mailto:docs@example.org">Mail us</a></li>
</ul></main></body></html>"""


class BadSiteHandler(BaseHTTPRequestHandler):
    """A small docs site with one page of each kind of trouble."""

    slow_seconds = 4.0
    requested: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.requested.append(self.path)
        routes = {
            "/robots.txt": (200, "text/plain", b"User-agent: *\nDisallow: /docs/private/\n"),
            "/docs": (200, "text/html; charset=utf-8", BAD_SITE_INDEX),
            "/docs/ok": (200, "text/html", b"<html><head><title>OK</title></head><body><p>Fine.</p></body></html>"),
            "/docs/server-error": (500, "text/html", b"<html><body>Internal Server Error</body></html>"),
            "/docs/data.csv": (200, "text/csv", b"a,b\n1,2\n"),
            "/docs/empty": (200, "text/html", b"<html><head><title>x</title></head><body>  \n </body></html>"),
            "/docs/malformed": (200, "text/html", b"<html><body><div><h2>Half a page<p>still readable <b>text"),
            "/docs/private/secret": (200, "text/html", b"<html><body><p>secret</p></body></html>"),
        }
        if self.path == "/docs/slow":
            time.sleep(self.slow_seconds)
            routes[self.path] = (200, "text/html", b"<html><body><p>late</p></body></html>")
        status, content_type, body = routes.get(self.path, (404, "text/html", b"<html><body>Not found</body></html>"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the crawler gave up waiting (the timeout case)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


@pytest.fixture
def bad_site() -> Iterator[str]:
    """Serve the misbehaving site on 127.0.0.1 and yield its origin; always stopped."""
    with serve(BadSiteHandler) as origin:
        yield origin
