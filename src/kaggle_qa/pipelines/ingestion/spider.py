"""The docs spider and a crawl runner that can run any number of times in one Python process.

Each crawl runs in a fresh child process started with the ``spawn`` context (a Twisted
reactor cannot be restarted in-process, and ``fork`` would inherit signal handlers); the
child writes every record to a JSON-lines feed and its stats to a JSON file, which the
parent reads back. Records are of three kinds:

- ``page``: a fetched HTML page (url, final_url, status, title, fetched_at, sha256, html, depth);
- ``skip``: a URL not fetched or not kept, with a reason from :data:`SKIP_REASONS` (and
  ``final_url`` where a redirect led elsewhere; ``excluded`` skips name the pattern that matched);
- ``error``: an unexpected failure (connection refused, DNS, a parse crash), with the URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import signal
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import scrapy
from scrapy.exceptions import DownloadTimeoutError, IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.gz import gunzip, gzip_magic_number
from scrapy.utils.sitemap import Sitemap
from twisted.internet.error import TCPTimedOutError, TimeoutError

from .content_checks import check_text
from .lifeline import die_with_parent, forward_termination
from .redirects import DOWNLOADER_MIDDLEWARES, SkipRequest

logger = logging.getLogger(__name__)

SKIP_REASONS = (
    "robots",  # disallowed by robots.txt
    "off-site",  # another host, or outside the allowed path prefixes
    "excluded",  # in scope, but its path matches one of crawl.exclude_patterns (detail: the pattern)
    "non-html",  # a response that is not text/html
    "http-status",  # 4xx/5xx after retries
    "timeout",  # no response within download_timeout, after retries
    "empty",  # HTML without any visible text (empty or malformed)
    "page-limit",  # max_pages already scheduled
    "depth-limit",  # deeper than max_depth links from the start page
    "not-http",  # mailto:, javascript:, tel: … links
    "redirect-off-site",  # redirected to another host or outside the allowed path prefix (not followed)
    "redirect-loop",  # a redirect chain back to itself (a self-refreshing page too), or too long
    "duplicate-of",  # redirected to a page the crawl already requested (detail: that URL)
    "binary",  # labelled text/html, but bytes that are not text
    "bad-encoding",  # not valid in its declared charset (never decoded with replacement characters)
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class CrawlError(RuntimeError):
    """The crawl could not run, or its start URL could not be fetched."""


@dataclass
class CrawlResult:
    """Everything one crawl produced."""

    pages: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def normalise_url(url: str) -> str:
    """Drop the fragment (same page) so each page is requested once."""
    return urldefrag(url)[0]


def page_key(url: str) -> str:
    """The page a URL names: fragment dropped, and ``…/index.html`` the same page as ``…/``."""
    url = normalise_url(url)
    return url[: -len("index.html")] if url.endswith("/index.html") else url


def compile_patterns(patterns: list[str] | None) -> list[re.Pattern]:
    """crawl.exclude_patterns as regexes; a bad one fails naming it."""
    compiled = []
    for pattern in patterns or []:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"params:ingestion.crawl.exclude_patterns: {pattern!r} is not a regex: {error}") from error
    return compiled


class DocsSpider(scrapy.Spider):
    """Crawl a docs site from its start pages (and sitemap), following in-site links under the allowed prefixes."""

    name = "docs"

    def __init__(
        self,
        start_urls: list[str],
        allowed_path_prefixes: list[str] = ("/",),
        exclude_patterns: list[str] = (),
        sitemap_url: str | None = None,
        canonical_origin: str | None = None,
        max_pages: int = 200,
        max_depth: int = 3,
        render_js: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.start_page_urls = [normalise_url(url) for url in start_urls]
        parts = urlsplit(self.start_page_urls[0])
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.canonical_origin = canonical_origin or self.origin  # sitemap <loc>s name the mirrored site
        self.allowed_path_prefixes = [prefix.rstrip("/") for prefix in allowed_path_prefixes]
        self.exclude_patterns = compile_patterns(list(exclude_patterns))
        self.sitemap_url = sitemap_url
        self.max_pages = int(max_pages)
        self.max_depth = int(max_depth)
        self.render_js = bool(render_js)
        self.seen: set[str] = set()
        self.scheduled = 0
        self.fetched = 0

    def already_seen(self, url: str) -> bool:
        """Was this page (fragment ignored, ``index.html`` = ``/``) already requested, linked or reached?"""
        return page_key(url) in self.seen

    def mark_seen(self, url: str) -> None:
        self.seen.add(page_key(url))

    def request(self, url: str, depth: int, referer: str | None) -> scrapy.Request:
        """A page request carrying our depth, referer and (optionally) the JS-rendering flag."""
        meta = {"depth": depth, "referer": referer}
        if self.render_js:
            meta["playwright"] = True
        self.mark_seen(url)
        self.scheduled += 1
        return scrapy.Request(url, callback=self.parse, errback=self.on_error, meta=meta)

    async def start(self):
        """Start at the start pages (each fetched once), then at the sitemap's pages if one is given."""
        for url in self.start_page_urls:
            if not self.already_seen(url):
                yield self.request(url, depth=0, referer=None)
        if self.sitemap_url:
            yield scrapy.Request(self.sitemap_url, callback=self.parse_sitemap, errback=self.on_error,
                                 meta={"referer": None}, dont_filter=True)

    def parse_sitemap(self, response: Response):
        """Seed the crawl with a sitemap's pages (depth 0; a sitemap index is followed), filtered like links."""
        body = response.body
        if body[:2] == gzip_magic_number:
            body = gunzip(body)
        try:
            sitemap = Sitemap(body)
        except Exception as error:  # not XML at all
            yield {"kind": "error", "url": response.url, "error": f"sitemap: {type(error).__name__}: {error}",
                   "referer": None}
            return
        for entry in sitemap:
            url = normalise_url(entry["loc"].strip())
            if url.startswith(self.canonical_origin + "/") and self.canonical_origin != self.origin:
                url = self.origin + url[len(self.canonical_origin):]  # the local copy of the mirrored site
            if sitemap.type == "sitemapindex":
                if urlsplit(url).netloc == urlsplit(self.origin).netloc:
                    yield scrapy.Request(url, callback=self.parse_sitemap, errback=self.on_error,
                                         meta={"referer": response.url})
                continue
            yield from self.consider(url, depth=-1, referer=response.url)

    def in_scope(self, url: str) -> bool:
        """Same scheme and host as the start URLs, and under one of the allowed path prefixes."""
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.origin and any(
            parts.path == prefix or parts.path.startswith(prefix + "/") for prefix in self.allowed_path_prefixes
        )

    def excluded_by(self, url: str) -> str | None:
        """The first exclude pattern that matches the URL's path, if any."""
        path = urlsplit(url).path
        return next((pattern.pattern for pattern in self.exclude_patterns if pattern.search(path)), None)

    def skip(self, url: str, reason: str, referer: str | None, detail: str = "", **extra: Any) -> dict[str, Any]:
        """A skip record (a URL deliberately not fetched or not kept)."""
        return {"kind": "skip", "url": url, "reason": reason, "detail": detail, "referer": referer, **extra}

    def parse(self, response: Response):
        """Keep an HTML page with visible text, then follow its in-scope links."""
        request_url = response.request.meta.get("redirect_urls", [response.request.url])[0]
        referer = response.meta.get("referer")
        try:
            content_type = response.headers.get("Content-Type", b"").decode("latin-1").lower()
            if not isinstance(response, TextResponse) or "html" not in content_type:
                yield self.skip(request_url, "non-html", referer, content_type or "no content type")
                return
            moved = normalise_url(response.url) != normalise_url(response.request.url)
            if moved and not self.in_scope(response.url):  # a browser-side redirect (render_js) escaped
                yield self.skip(request_url, "redirect-off-site", referer, f"landed on {response.url}",
                                final_url=response.url)
                return
            declared = response.encoding
            text_check = check_text(response.body, declared)
            if text_check.reason:
                yield self.skip(request_url, text_check.reason, referer, text_check.detail, final_url=response.url)
                return
            if text_check.detail:  # decoded with the page's own meta charset instead of the header's
                logger.warning("%s: %s", request_url, text_check.detail)
                response = response.replace(encoding=text_check.encoding)
            visible = " ".join(
                response.xpath("//body//text()[not(ancestor::script or ancestor::style)]").getall()
            ).strip()
            if not visible:
                yield self.skip(request_url, "empty", referer, f"{len(response.body)} bytes, no visible text")
                return
            title = (response.xpath("normalize-space(//title)").get() or "").strip()
            yield {
                "kind": "page",
                "url": request_url,
                "final_url": response.url,
                "status": response.status,
                "title": title,
                "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sha256": hashlib.sha256(response.body).hexdigest(),
                "html": response.text,
                "encoding": response.encoding,
                "depth": response.meta.get("depth", 0),
            }
            self.fetched += 1
            logger.info("page %d (%d scheduled, max %d): %s", self.fetched, self.scheduled, self.max_pages, request_url)
            yield from self.follow_links(response)
        except Exception as error:  # a page we cannot parse must not stop the crawl
            yield {"kind": "error", "url": request_url, "error": f"{type(error).__name__}: {error}",
                   "referer": referer}

    def follow_links(self, response: TextResponse):
        """Request every new in-scope link (within the limits); record every other link once."""
        depth = response.meta.get("depth", 0)
        for href in response.xpath("//a/@href").getall():
            url = normalise_url(urljoin(response.url, href.strip()))
            yield from self.consider(url, depth, response.url)

    def consider(self, url: str, depth: int, referer: str | None):
        """Request ``url`` (found at ``depth`` + 1) if it is new, in scope, not excluded and within the limits;
        otherwise record why not, once."""
        if not url or self.already_seen(url):
            return
        self.mark_seen(url)
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            yield self.skip(url, "not-http", referer, scheme)
        elif not self.in_scope(url):
            yield self.skip(url, "off-site", referer)
        elif pattern := self.excluded_by(url):
            yield self.skip(url, "excluded", referer, pattern)
        elif depth + 1 > self.max_depth:
            yield self.skip(url, "depth-limit", referer, f"depth {depth + 1} > {self.max_depth}")
        elif self.scheduled >= self.max_pages:
            yield self.skip(url, "page-limit", referer, f"{self.max_pages} pages scheduled")
        else:
            yield self.request(url, depth + 1, referer)

    def on_error(self, failure):
        """Turn a failed request into a skip (robots, HTTP status, timeout) or an error record."""
        request = failure.request
        url = request.meta.get("redirect_urls", [request.url])[0]
        referer = request.meta.get("referer")
        if failure.check(SkipRequest):
            skip = failure.value
            yield self.skip(url, skip.reason, referer, skip.detail, final_url=skip.final_url)
        elif failure.check(HttpError):
            status = failure.value.response.status
            yield self.skip(url, "http-status", referer, str(status))
        elif failure.check(IgnoreRequest) and "robots" in str(failure.value).lower():
            yield self.skip(url, "robots", referer, str(failure.value))
        elif failure.check(DownloadTimeoutError, TimeoutError, TCPTimedOutError):
            yield self.skip(url, "timeout", referer, str(failure.value))
        else:
            yield {"kind": "error", "url": url, "error": f"{failure.type.__name__}: {failure.value}",
                   "referer": referer}


def scrapy_settings(crawl: dict[str, Any]) -> dict[str, Any]:
    """Polite Scrapy settings from the ``crawl`` parameters (see parameters_ingestion.yml)."""
    settings = {
        "BOT_NAME": "kaggle-qa",
        "USER_AGENT": crawl["user_agent"],
        "ROBOTSTXT_OBEY": True,
        "DOWNLOAD_DELAY": crawl["download_delay"],
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl["concurrent_requests_per_domain"],
        "AUTOTHROTTLE_ENABLED": crawl["autothrottle"],
        "AUTOTHROTTLE_START_DELAY": crawl["autothrottle_start_delay"],
        "AUTOTHROTTLE_MAX_DELAY": crawl["autothrottle_max_delay"],
        "AUTOTHROTTLE_TARGET_CONCURRENCY": 1.0,
        "DOWNLOAD_TIMEOUT": crawl["download_timeout"],
        "RETRY_ENABLED": True,
        "RETRY_TIMES": crawl["retry_times"],
        "DEPTH_LIMIT": 0,  # the spider enforces max_depth itself, so cut links are reported
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,  # Scrapy 2.19's remote-control HTTP port
        "COOKIES_ENABLED": False,  # its tldextract would try to download the public suffix list
        "HTTPCACHE_ENABLED": False,
        "LOG_LEVEL": crawl["log_level"],
        "LOGSTATS_INTERVAL": crawl["logstats_interval"],
        "DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES,  # redirects checked against the scope
    }
    if crawl["render_js"]:
        handler = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
        settings |= {
            "DOWNLOAD_HANDLERS": {"http": handler, "https": handler},
            "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
            "PLAYWRIGHT_BROWSER_TYPE": "chromium",
            "PLAYWRIGHT_LAUNCH_OPTIONS": {
                "executable_path": crawl["chromium_executable"],
                "headless": True,
                "args": CHROMIUM_FLAGS,
            },
            "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": crawl["download_timeout"] * 1000,
        }
    return settings


def _crawl_in_child(settings: dict, spider_kwargs: dict, feed_path: str, stats_path: str, parent_pid: int) -> None:
    """Child-process body: run one crawl, write items to the feed and stats to JSON.

    The child dies with its parent (see :mod:`.lifeline`), and SIGTERM/SIGINT end it at once
    instead of Scrapy's graceful shutdown (which keeps downloading what is in flight and
    needs a second signal): a stopped run's partial crawl is discarded anyway.
    """
    from scrapy.crawler import CrawlerProcess

    die_with_parent(parent_pid)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: os._exit(128 + signum))

    # Handlers inherited from the parent's logging config (e.g. Kedro's) would print Scrapy's
    # DEBUG records, whole pages included: Scrapy's own handler alone applies LOG_LEVEL.
    logging.getLogger().handlers.clear()
    process = CrawlerProcess(
        settings | {"FEEDS": {Path(feed_path).as_uri(): {"format": "jsonlines", "encoding": "utf8"}}}
    )
    crawler = process.create_crawler(DocsSpider)
    process.crawl(crawler, **spider_kwargs)
    process.start(install_signal_handlers=False)
    Path(stats_path).write_text(json.dumps(crawler.stats.get_stats(), default=str), encoding="utf-8")


def allowed_prefixes(crawl: dict[str, Any]) -> list[str]:
    """crawl.allowed_path_prefixes, or the older singular crawl.allowed_path_prefix (which wins when set)."""
    if crawl.get("allowed_path_prefix"):
        return [crawl["allowed_path_prefix"]]
    prefixes = crawl.get("allowed_path_prefixes") or ["/"]
    if isinstance(prefixes, str) or any(not str(p).startswith("/") for p in prefixes):
        raise ValueError(f"params:ingestion.crawl.allowed_path_prefixes must be a list of paths starting with '/', "
                         f"got {prefixes!r}")
    return list(prefixes)


def crawl_site(
    start_url: str | list[str], crawl: dict[str, Any], sitemap_url: str | None = None,
    canonical_origin: str | None = None,
) -> CrawlResult:
    """Crawl from the start URL(s) (and a sitemap) in a spawned child process; collect pages, skips and errors."""
    start_urls = [start_url] if isinstance(start_url, str) else list(start_url)
    spider_kwargs = {
        "start_urls": start_urls,
        "allowed_path_prefixes": allowed_prefixes(crawl),
        "exclude_patterns": list(crawl.get("exclude_patterns") or []),
        "sitemap_url": sitemap_url,
        "canonical_origin": canonical_origin,
        "max_pages": crawl["max_pages"],
        "max_depth": crawl["max_depth"],
        "render_js": crawl["render_js"],
    }
    with tempfile.TemporaryDirectory(prefix="kaggle-qa-crawl-") as tmp:
        feed, stats = Path(tmp) / "items.jsonl", Path(tmp) / "stats.json"
        child = multiprocessing.get_context("spawn").Process(
            target=_crawl_in_child,
            args=(scrapy_settings(crawl), spider_kwargs, str(feed), str(stats), os.getpid()),
            name="scrapy-crawl",
        )
        child.start()
        with forward_termination(child):  # Ctrl-C / SIGTERM here stop the child too
            child.join()
        if child.exitcode != 0 or not stats.exists():
            raise CrawlError(f"the crawl of {', '.join(start_urls)} failed (child exit code {child.exitcode}); see the log above")
        records = [json.loads(line) for line in feed.read_text(encoding="utf-8").splitlines() if line]
        result = CrawlResult(stats=json.loads(stats.read_text(encoding="utf-8")))
    for record in records:
        kind = record.pop("kind")
        {"page": result.pages, "skip": result.skipped, "error": result.errors}[kind].append(record)
    return result


__all__ = ["CrawlError", "CrawlResult", "DocsSpider", "SKIP_REASONS", "crawl_site"]
