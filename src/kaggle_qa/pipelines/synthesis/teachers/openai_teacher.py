"""The `openai` teacher: any OpenAI-compatible chat-completions endpoint, asked for JSON.

- Bounded concurrency (a thread pool), our own retry loop with exponential backoff on 429,
  5xx, timeouts and dropped connections (the client's own retries are off so every retry is
  counted), other API errors (bad key, bad request) stop the run at once.
- An on-disk cache: one JSON file per request, named by the sha256 of (model, messages,
  sampling params), written atomically. A re-run makes no requests; a killed run resumes
  with only the missing ones.
- A 200 whose body is not a chat completion (a proxy's error page) is retried, then
  quarantined naming the endpoint; after ``circuit_breaker_failures`` connection failures in
  a row the run stops at once naming the endpoint (see :mod:`.http_faults`).
- Replies are parsed leniently into rows by :func:`.base.parse_reply`; anything malformed
  becomes a quarantine record with the reason, never an exception. A reply keeps what a chat
  model's answer says about itself: ``finish_reason`` ("length": cut at max_tokens, so its JSON
  is truncated) and OpenAI's ``refusal`` field. Usage counts replies whose JSON came wrapped in
  prose or a code fence (``replies_json_in_prose``), cut at max_tokens (``replies_truncated``)
  and refused (``replies_refused``).
The API key is passed in by the caller and never logged, cached or returned.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
from tqdm.auto import tqdm

from ..http_faults import CircuitBreaker, MalformedResponse, checked_completion
from .base import REFUSAL, ReplyCache, TeacherStats, json_object_in, request_key, system_messages

logger = logging.getLogger(__name__)


class OpenAITeacher:
    """Sends rendered prompts to the endpoint and turns replies into QA rows."""

    def __init__(self, params: dict, api_key: str | None):
        if not api_key:
            if params["api_key_required"]:
                raise ValueError(
                    "The openai teacher needs an API key: set OPENAI_API_KEY, or put "
                    "`openai: {api_key: ...}` in conf/local/credentials.yml "
                    "(or set synthesis.openai.api_key_required=false for a local server)."
                )
            api_key = "no-key"
        self.params = params
        self.client = openai.OpenAI(
            base_url=params["base_url"], api_key=api_key, max_retries=0, timeout=params["timeout_s"]
        )
        self.cache = ReplyCache(params["cache_dir"])
        self.stats = TeacherStats()
        self.endpoint = f"{params['base_url'].rstrip('/')}/chat/completions"
        self.breaker = CircuitBreaker(self.endpoint, params["circuit_breaker_failures"])
        self.sampling = {
            "temperature": params["temperature"],
            "max_tokens": params["max_tokens"],
            "response_format": {"type": "json_object"},
        }

    def complete_all(self, prompts: list[str]) -> list[dict]:
        """Replies ({"content", "usage"} or {"error"}) for every prompt, in order."""
        replies: list[dict | None] = [None] * len(prompts)
        with ThreadPoolExecutor(max_workers=self.params["concurrency"]) as pool:
            futures = {pool.submit(self.complete, prompt): i for i, prompt in enumerate(prompts)}
            for future in tqdm(as_completed(futures), total=len(futures), desc="teacher requests"):
                replies[futures[future]] = future.result()
        failed = sum("error" in reply for reply in replies)
        if prompts and failed / len(prompts) > self.params["max_failed_share"]:
            raise RuntimeError(
                f"openai teacher: {failed} of {len(prompts)} requests failed after retries "
                f"(more than max_failed_share={self.params['max_failed_share']}); stats: {self.stats.as_dict()}"
            )
        return replies

    def complete(self, prompt: str) -> dict:
        """One reply, from the cache or from the endpoint with retries and backoff."""
        messages = system_messages(prompt)
        key = request_key(self.params["model"], messages, self.sampling)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add(cache_hits=1)
            return cached
        retryable = {
            openai.RateLimitError: "retries_rate_limit",
            openai.InternalServerError: "retries_server_error",
            openai.APITimeoutError: "retries_timeout",
            openai.APIConnectionError: "retries_connection",
            MalformedResponse: "retries_malformed",
        }
        for attempt in range(self.params["max_retries"] + 1):
            self.breaker.check()
            try:
                self.stats.add(requests=1)
                response = checked_completion(
                    lambda: self.client.chat.completions.create(
                        model=self.params["model"], messages=messages, **self.sampling
                    ),
                    self.endpoint,
                )
            except tuple(retryable) as exc:
                if isinstance(exc, openai.APIConnectionError):  # refused, reset or timed out
                    self.breaker.failure()  # raises TeacherUnreachable when the breaker opens
                else:
                    self.breaker.success()
                counter = next(name for kind, name in retryable.items() if isinstance(exc, kind))
                if attempt == self.params["max_retries"]:
                    self.stats.add(failed_requests=1)
                    what = str(exc) if isinstance(exc, MalformedResponse) else f"{type(exc).__name__} from {self.endpoint}"
                    logger.warning("Teacher request %s failed after %d attempts: %s", key[:12], attempt + 1, what)
                    return {"error": f"{what} (after {attempt + 1} attempts)"}
                self.stats.add(**{counter: 1})
                time.sleep(self._backoff(attempt, exc))
                continue
            except openai.APIStatusError as exc:
                self.breaker.success()
                raise RuntimeError(
                    f"openai teacher: {self.params['base_url']} answered HTTP {exc.status_code} "
                    f"({type(exc).__name__}); not retried"
                ) from None
            self.breaker.success()
            reply = self._reply(response)
            self.cache.put(key, reply)
            return reply
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """Seconds to wait: the server's Retry-After if given, else exponential with jitter."""
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), self.params["backoff_max_s"])
            except ValueError:
                pass
        delay = self.params["backoff_initial_s"] * 2**attempt
        return min(delay, self.params["backoff_max_s"]) * (0.5 + random.random() / 2)

    def _reply(self, response) -> dict:
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        self.stats.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        choices = getattr(response, "choices", None) or []
        message = choices[0].message if choices else None
        content = (getattr(message, "content", None) or "") if message is not None else ""
        reply = {
            "content": content,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
            "finish_reason": choices[0].finish_reason if choices else None,
        }
        refusal = getattr(message, "refusal", None) if message is not None else None
        if refusal:
            reply["refusal"] = refusal
        found = json_object_in(content) if content.strip() else None
        if refusal or (found is None and REFUSAL.match(content)):
            self.stats.add(replies_refused=1)
        elif found is None and reply["finish_reason"] == "length":
            self.stats.add(replies_truncated=1)
        elif found is not None and found[1]:
            self.stats.add(replies_json_in_prose=1)
        return reply
