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
- Replies are parsed leniently into rows; anything malformed (not JSON, missing keys, wrong
  types, empty) becomes a quarantine record with the reason, never an exception.
The API key is passed in by the caller and never logged, cached or returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import openai
from tqdm.auto import tqdm

from kaggle_qa.qa_schema import TASK_TYPES, infer_task_type

from .http_faults import CircuitBreaker, MalformedResponse, checked_completion

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You write question-answer pairs for instruction tuning. Reply with one JSON object only."


@dataclass
class TeacherStats:
    """What the teacher cost and how often it had to retry (the datasheet's usage summary)."""

    requests: int = 0
    cache_hits: int = 0
    retries_rate_limit: int = 0
    retries_server_error: int = 0
    retries_timeout: int = 0
    retries_connection: int = 0
    retries_malformed: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class ReplyCache:
    """One JSON file per request key under `folder` (atomic writes, so a kill never corrupts)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("Ignoring unreadable cache entry %s", path)
            return None

    def put(self, key: str, value: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def request_key(model: str, messages: list[dict], sampling: dict) -> str:
    """The cache key: sha256 of everything that determines the reply."""
    payload = json.dumps({"model": model, "messages": messages, "sampling": sampling}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
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
        content = choices[0].message.content if choices else None
        return {
            "content": content or "",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }


def parse_reply(reply: dict, chunk: dict, recipe: dict, teacher: str) -> tuple[list[dict], list[dict]]:
    """(rows, problems) from one teacher reply; a problem is {"reason", "detail"}."""
    if "error" in reply:
        return [], [{"reason": f"teacher request failed: {reply['error']}", "detail": ""}]
    content = reply["content"].strip()
    if not content:
        return [], [{"reason": "malformed reply: empty", "detail": ""}]
    try:
        payload = json.loads(content)
    except json.JSONDecodeError as exc:
        return [], [{"reason": f"malformed reply: not JSON ({exc.msg})", "detail": content[:300]}]
    items = payload.get("pairs") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return [], [{"reason": "malformed reply: no 'pairs' list", "detail": content[:300]}]
    rows, problems = [], []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append({"reason": f"malformed pair {position}: not an object", "detail": repr(item)[:300]})
            continue
        missing = [k for k in ("instruction", "output") if not isinstance(item.get(k), str)]
        if missing or not isinstance(item.get("input", ""), str):
            what = f"missing or non-string {missing}" if missing else "non-string 'input'"
            problems.append({"reason": f"malformed pair {position}: {what}", "detail": json.dumps(item)[:300]})
            continue
        context = chunk["text"] if recipe["input_mode"] == "chunk" else item.get("input", "")
        row = {"input": context, "instruction": item["instruction"], "output": item["output"]}
        task = item.get("task_type")
        row["task_type"] = task if task in TASK_TYPES else infer_task_type(row)
        rows.append(row | {"chunk_id": chunk["chunk_id"], "url": chunk["url"], "teacher": teacher})
    return rows, problems
