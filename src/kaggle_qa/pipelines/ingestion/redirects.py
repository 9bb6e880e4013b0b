"""Redirects that stay in the crawl's scope, and a named reason for every one that does not.

Scrapy's own redirect middlewares follow a ``301``/``302``/… or a ``<meta http-equiv=refresh>``
anywhere, and a redirect back to an already-requested URL is dropped silently by the
duplicate filter. These subclasses check each redirect target first and refuse it with a
:class:`SkipRequest` (which reaches the spider's errback with its reason):

- ``redirect-off-site``: the target is on another host or outside the allowed path prefixes
  (the outside page is never requested, so it cannot be stored under the in-scope URL);
- ``excluded``: the target's path matches one of ``crawl.exclude_patterns`` (detail: the pattern);
- ``redirect-loop``: the target is already in this request's redirect chain (a page that
  refreshes to itself included), or the chain is longer than ``REDIRECT_MAX_TIMES``;
- ``duplicate-of``: the target is a page the crawl already requested (detail: its URL).
"""

from __future__ import annotations

from typing import Any

from scrapy import Request
from scrapy.downloadermiddlewares.redirect import MetaRefreshMiddleware, RedirectMiddleware
from scrapy.exceptions import IgnoreRequest
from w3lib.url import canonicalize_url


class SkipRequest(IgnoreRequest):
    """A request deliberately not followed, with a skip reason, a detail and the URL it led to."""

    def __init__(self, reason: str, detail: str, final_url: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.final_url = reason, detail, final_url


def _same(url: str) -> str:
    """A comparable form of a URL (no fragment, sorted query), as the duplicate filter sees it."""
    return canonicalize_url(url)


class ScopedRedirectMixin:
    """Checks every redirect target against the spider's scope, chain and already-seen URLs."""

    def _redirect(self, redirected: Request, request: Request, reason: Any) -> Request:
        spider = self.crawler.spider
        target = redirected.url
        chain = [*request.meta.get("redirect_urls", []), request.url]
        how = "meta refresh" if reason == "meta refresh" else f"HTTP {reason}"
        if _same(target) in {_same(url) for url in chain}:
            raise SkipRequest("redirect-loop", f"{how}: {' -> '.join([*chain, target])}", target)
        if not spider.in_scope(target):
            raise SkipRequest("redirect-off-site", f"{how} to {target}", target)
        if pattern := spider.excluded_by(target):
            raise SkipRequest("excluded", pattern, target)
        if spider.already_seen(target):
            raise SkipRequest("duplicate-of", target, target)
        try:
            followed = super()._redirect(redirected, request, reason)
        except IgnoreRequest as error:  # "max redirections reached"
            raise SkipRequest("redirect-loop", f"{error}: {' -> '.join([*chain, target])}", target) from None
        spider.mark_seen(target)  # a later link to the target is the page already kept
        return followed


class ScopedRedirectMiddleware(ScopedRedirectMixin, RedirectMiddleware):
    """HTTP 301/302/303/307/308 redirects, checked (replaces Scrapy's RedirectMiddleware)."""


class ScopedMetaRefreshMiddleware(ScopedRedirectMixin, MetaRefreshMiddleware):
    """``<meta http-equiv="refresh">`` redirects, checked (replaces Scrapy's MetaRefreshMiddleware)."""


DOWNLOADER_MIDDLEWARES = {  # same priorities as the middlewares they replace
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    f"{__name__}.ScopedRedirectMiddleware": 600,
    f"{__name__}.ScopedMetaRefreshMiddleware": 580,
}
