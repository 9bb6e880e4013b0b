"""Faults of an HTTP teacher that the client library does not turn into a clean error.

- :func:`checked_completion`: a ``200`` whose body is not a chat completion (a proxy's HTML
  error page, a truncated body) becomes :class:`MalformedResponse`, naming the endpoint,
  instead of a ``JSONDecodeError`` that aborts the run or a plain string read as an empty reply.
  The caller retries it like a server error, then quarantines the prompt with the reason.
- :class:`CircuitBreaker`: after ``threshold`` connection failures in a row (refused, reset,
  timed out; any HTTP answer resets the count) every further request stops at once with
  :class:`TeacherUnreachable`, naming the endpoint, instead of retrying every prompt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any


class MalformedResponse(Exception):
    """The endpoint answered HTTP 200 with a body that is not a chat completion."""


class TeacherUnreachable(RuntimeError):
    """Too many connection failures in a row: the endpoint is down or unreachable."""


def checked_completion(create: Callable[[], Any], endpoint: str) -> Any:
    """Call ``create()`` and return a chat completion, or raise :class:`MalformedResponse`."""
    try:
        response = create()
    except json.JSONDecodeError as error:  # a body labelled JSON that is not
        raise MalformedResponse(f"{endpoint} answered HTTP 200 with a body that is not JSON ({error.msg})") from None
    if not hasattr(response, "choices"):  # another content type: the client hands back the raw text
        preview = " ".join(str(response).split())[:80]
        raise MalformedResponse(f"{endpoint} answered HTTP 200 with a body that is not a chat completion: {preview!r}")
    return response


class CircuitBreaker:
    """Counts consecutive connection failures across threads; opens (for good) at ``threshold``."""

    def __init__(self, endpoint: str, threshold: int):
        if threshold < 1:
            raise ValueError(f"circuit_breaker_failures must be >= 1, got {threshold}")
        self.endpoint, self.threshold = endpoint, threshold
        self.consecutive = 0
        self.is_open = False
        self._lock = threading.Lock()

    def _error(self) -> TeacherUnreachable:
        return TeacherUnreachable(
            f"teacher endpoint {self.endpoint} unreachable: {self.consecutive} connection failures in a row "
            f"(circuit_breaker_failures={self.threshold}); stopped without sending the remaining requests. "
            "Is the server running and the base_url right?"
        )

    def check(self) -> None:
        """Raise :class:`TeacherUnreachable` once the breaker is open (call before each request)."""
        if self.is_open:
            raise self._error()

    def failure(self) -> None:
        """One more connection failure; raise :class:`TeacherUnreachable` when it opens the breaker."""
        with self._lock:
            self.consecutive += 1
            if self.consecutive >= self.threshold:
                self.is_open = True
        self.check()

    def success(self) -> None:
        """The endpoint answered (any HTTP status): the failures so far were not in a row."""
        with self._lock:
            self.consecutive = 0
