"""What the model teachers (openai, transformers) share: the system prompt, the on-disk reply
cache and its request key, usage statistics, and the lenient parsing of a reply into rows."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaggle_qa.qa_schema import TASK_TYPES, infer_task_type

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
    replies_json_in_prose: int = 0  # JSON wrapped in prose or a code fence: taken out, rows kept
    replies_truncated: int = 0      # cut at max_tokens before the JSON closed: quarantined
    replies_refused: int = 0        # the model declined: quarantined
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


def system_messages(prompt: str) -> list[dict]:
    """The chat messages of one request: the system prompt, then the rendered prompt."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


# How chat models decline: the start of a reply that carries no JSON object
REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry|i can(not|'t)|i am unable|i'm unable|as an ai|unfortunately)",
                     re.IGNORECASE)


def json_object_in(content: str) -> tuple[Any, bool] | None:
    """The JSON value of a reply, and whether prose or a code fence stood around it.

    Chat models often wrap the object ("Here are the pairs: ```json {...} ``` Hope this helps!"):
    the first complete JSON object in the text is taken. None when there is none.
    """
    text = content.strip()
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value, True
    return None


def parse_reply(reply: dict, chunk: dict, recipe: dict, teacher: str) -> tuple[list[dict], list[dict]]:
    """(rows, problems) from one teacher reply; a problem is {"reason", "detail"}.

    Reasons name the kind of failure before any " (detail)", so they can be counted: a refusal,
    a reply cut at max_tokens (finish_reason "length") before its JSON closed, no JSON, no
    'pairs' list (the keys found are named), a pair with wrong or missing keys.
    """
    if "error" in reply:
        return [], [{"reason": f"teacher request failed: {reply['error']}", "detail": ""}]
    content = reply["content"].strip()
    if reply.get("refusal"):
        return [], [{"reason": "teacher refused", "detail": str(reply["refusal"])[:300]}]
    if not content:
        return [], [{"reason": "malformed reply: empty", "detail": ""}]
    found = json_object_in(content)
    if found is None:
        if reply.get("finish_reason") == "length":
            return [], [{"reason": "malformed reply: truncated at max_tokens", "detail": content[-300:]}]
        if REFUSAL.match(content):
            return [], [{"reason": "teacher refused", "detail": content[:300]}]
        try:
            json.loads(content)
        except json.JSONDecodeError as exc:
            return [], [{"reason": f"malformed reply: not JSON ({exc.msg})", "detail": content[:300]}]
    payload = found[0]
    items = payload.get("pairs") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        keys = f" (keys: {', '.join(map(str, payload))})" if isinstance(payload, dict) else ""
        return [], [{"reason": f"malformed reply: no 'pairs' list{keys}", "detail": content[:300]}]
    rows, problems = [], []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append({"reason": f"malformed pair: not an object (pair {position})", "detail": repr(item)[:300]})
            continue
        missing = [k for k in ("instruction", "output") if not isinstance(item.get(k), str)]
        if missing or not isinstance(item.get("input", ""), str):
            what = f"missing or non-string {missing}" if missing else "non-string 'input'"
            keys = ", ".join(map(str, item))
            problems.append({"reason": f"malformed pair: {what} (pair {position}; keys: {keys})",
                             "detail": json.dumps(item)[:300]})
            continue
        context = chunk["text"] if recipe["input_mode"] == "chunk" else item.get("input", "")
        row = {"input": context, "instruction": item["instruction"], "output": item["output"]}
        task = item.get("task_type")
        row["task_type"] = task if task in TASK_TYPES else infer_task_type(row)
        rows.append(row | {"chunk_id": chunk["chunk_id"], "url": chunk["url"], "teacher": teacher})
    return rows, problems
