"""A hostile docs site on 127.0.0.1: redirects out of scope and in circles, binary bytes and
broken encodings served as HTML, a huge page that repeats itself, and an endless slow site.

`serve(handler)` runs a handler class in a thread and yields its origin; every request path
is recorded in `handler.requested`, so a test can prove what the crawler never asked for.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CAFE_CP1252 = "Café crème: naïve users pay 10€ in Zürich. This page is about coffee and docs."
HUGE_REPEATS = 1500
HUGE_BLOCK = ("Every competition has a leaderboard that ranks the submissions of its teams. "
              "The public leaderboard is computed on a part of the test data only. ") * 3


def html(title: str, body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body><main>{body}</main></body></html>"


def huge_page() -> bytes:
    """About 0.5 MB: one real section, then the same block under HUGE_REPEATS headings."""
    sections = [f"<h2>Part {i}</h2><p>{HUGE_BLOCK}</p>" for i in range(HUGE_REPEATS)]
    return html("Huge", "<h1>Huge</h1><p>A page that repeats one block many times over.</p>" + "".join(sections)).encode()


INDEX_LINKS = ["ok", "alias", "moved", "away", "elsewhere", "loop-a", "refresh", "binary", "latin1",
               "meta-charset", "huge", "source"]


class HostileSiteHandler(BaseHTTPRequestHandler):
    """GET routes of the hostile site; `other_origin` is the same server under another host name."""

    requested: list[str] = []
    other_origin = ""

    def route(self) -> tuple[int, dict[str, str], bytes]:
        utf8 = {"Content-Type": "text/html; charset=utf-8"}
        links = "".join(f'<li><a href="/docs/{name}">{name}</a></li>' for name in INDEX_LINKS)
        binary = b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(20000)
        routes = {
            "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n"),
            "/docs": (200, utf8, html("Hostile", f"<h1>Hostile docs</h1><p>Everything a crawler fears.</p><ul>{links}</ul>").encode()),
            "/docs/ok": (200, utf8, html("OK", "<p>A fine page with plain text.</p>").encode()),
            "/docs/new-home": (200, utf8, html("New home", "<p>This page moved here from another path.</p>").encode()),
            "/docs/alias": (301, {"Location": "/docs/ok"}, b""),
            "/docs/moved": (301, {"Location": "/docs/new-home"}, b""),
            "/docs/away": (302, {"Location": "/outside/admin"}, b""),
            "/docs/source": (302, {"Location": "/docs/_modules/core.html"}, b""),  # excluded by crawl.exclude_patterns
            "/docs/elsewhere": (302, {"Location": f"{self.other_origin}/docs/ok-elsewhere"}, b""),
            "/docs/loop-a": (302, {"Location": "/docs/loop-b"}, b""),
            "/docs/loop-b": (302, {"Location": "/docs/loop-a"}, b""),
            "/docs/refresh": (200, utf8, html("Refresh", "<p>Reloading.</p>",
                                               '<meta http-equiv="refresh" content="0; url=/docs/refresh">').encode()),
            "/docs/binary": (200, {"Content-Type": "text/html"}, binary),
            "/docs/latin1": (200, utf8, html("Latin", f"<p>{CAFE_CP1252}</p>").encode("cp1252")),
            "/docs/meta-charset": (200, utf8, html("Café", f"<p>{CAFE_CP1252}</p>",
                                                   '<meta charset="windows-1252">').encode("cp1252")),
            "/docs/huge": (200, utf8, huge_page()),
            "/outside/admin": (200, utf8, html("Admin", "<p>Secret admin console.</p>").encode()),
            "/docs/ok-elsewhere": (200, utf8, html("Elsewhere", "<p>Another host.</p>").encode()),
        }
        return routes.get(self.path, (404, utf8, html("Not found", "<p>Not found.</p>").encode()))

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.requested.append(self.path)
        status, headers, body = self.route()
        self.reply(status, headers, body)

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


class EndlessSlowSiteHandler(HostileSiteHandler):
    """Every page links to three new pages and answers after `delay_s`: a crawl that never ends."""

    delay_s = 0.2

    def do_GET(self) -> None:  # noqa: N802
        self.requested.append(self.path)
        if self.path == "/robots.txt":
            return self.reply(200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n")
        time.sleep(self.delay_s)
        number = int(self.path.rsplit("/", 1)[-1]) if self.path[-1].isdigit() else 0
        links = "".join(f'<a href="/docs/page/{3 * number + k}">page</a>' for k in (1, 2, 3))
        self.reply(200, {"Content-Type": "text/html; charset=utf-8"},
                   html(f"Page {number}", f"<p>Page number {number}.</p>{links}").encode())


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 (any free port) and yield its origin; always stopped.

    The handler class gets `requested = []` and `other_origin` (the same server under another host name)."""
    handler.requested = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    handler.other_origin = f"http://localhost:{port}"  # the same server, but another host for the crawler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
