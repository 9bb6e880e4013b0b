"""An OpenAI-compatible HTTP server for the assistant (FastAPI + uvicorn, 127.0.0.1 by default).

Endpoints: ``POST /v1/chat/completions`` (``stream: true`` answers as server-sent events),
``GET /v1/models``, ``GET /health``. The question is the last user message; the answer's
citations are appended to the message text ("Sources: [1] url › heading") and given as a
structured ``citations`` field (on the message, and on the last stream chunk).

The model is loaded once per process and runs on one worker thread: requests queue onto it.
At most ``max_pending`` requests may be running or queued; more get 503 with ``Retry-After``.
Bad requests get a 4xx with an OpenAI-style ``{"error": {"message", "type", "code"}}`` body:
malformed JSON or no messages 400, unknown model 404, oversized body or question 413.
A client that disconnects mid-stream cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from .core import Answer, Assistant

logger = logging.getLogger(__name__)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat-completions request the assistant uses (others are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def question_of(request: ChatRequest) -> str:
    """The text of the last user message (string content or OpenAI content parts)."""
    if not request.messages:
        raise RequestError(400, "'messages' is empty: send at least one user message", "no_messages")
    user = [m for m in request.messages if m.role == "user"]
    if not user:
        raise RequestError(400, "no message with role 'user' in 'messages'", "no_user_message")
    content = user[-1].content
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    if not content or not content.strip():
        raise RequestError(400, "the last user message has no text", "empty_message")
    return content.strip()


def parse_request(body: bytes, settings: dict, model_name: str) -> tuple[ChatRequest, str]:
    """Validate a raw request body; raises :class:`RequestError` with the status and a message."""
    if len(body) > settings["max_body_bytes"]:
        raise RequestError(413, f"request body of {len(body)} bytes exceeds {settings['max_body_bytes']}", "too_large")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON body: {exc}", "invalid_json") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "the JSON body must be an object", "invalid_json")
    if not payload.get("messages"):
        raise RequestError(400, "'messages' is missing or empty: send at least one user message", "no_messages")
    try:
        request = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RequestError(400, f"invalid request: {where}: {first['msg']}", "invalid_request") from None
    if request.model and request.model != model_name:
        raise RequestError(404, f"model {request.model!r} does not exist; this server serves {model_name!r}",
                           "model_not_found")
    question = question_of(request)
    if len(question) > settings["max_input_chars"]:
        raise RequestError(413, f"question of {len(question)} characters exceeds {settings['max_input_chars']}",
                           "too_large")
    return request, question


def create_app(assistant: Assistant, settings: dict) -> FastAPI:
    """The FastAPI app serving `assistant` (already loaded) with the `assistant.server` settings."""
    app = FastAPI(title="kaggle-qa assistant", version="1")
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaggle-qa-model")
    state = {"pending": 0, "served": 0, "cancelled": 0}
    name = assistant.name

    def submit(loop: asyncio.AbstractEventLoop, job) -> asyncio.Future:
        """Queue a job onto the model thread; its slot is freed when the model is done with it."""
        state["pending"] += 1
        future = loop.run_in_executor(worker, job)

        def release(_):
            state["pending"] -= 1
            state["served"] += 1

        future.add_done_callback(release)
        return future

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "max_pending": settings["max_pending"], **state}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "kaggle-qa"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            chat, question = parse_request(await request.body(), settings, name)
        except RequestError as exc:
            return error_response(exc.status, exc.message, exc.code)
        if state["pending"] >= settings["max_pending"]:
            return error_response(
                503, f"server busy: {state['pending']} requests running or queued (max_pending"
                f" {settings['max_pending']}); retry later", "busy", headers={"Retry-After": "1"},
            )
        limit = chat.max_completion_tokens or chat.max_tokens or assistant.max_new_tokens
        max_new_tokens = max(1, min(limit, assistant.max_new_tokens))
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        loop = asyncio.get_running_loop()
        if not chat.stream:
            answer = await submit(loop, lambda: assistant.ask(question, max_new_tokens=max_new_tokens))
            return completion_body(answer, completion_id, created, name)
        pieces: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def job():
            try:
                answer = assistant.ask(question, max_new_tokens=max_new_tokens, cancel=cancel,
                                       on_text=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text))
                if cancel.is_set():  # the client left before the answer was complete
                    state["cancelled"] += 1
                    logger.info("Stream cancelled by the client after %d tokens", answer.completion_tokens)
                loop.call_soon_threadsafe(pieces.put_nowait, answer)
            except Exception as exc:  # reported to the client as an error event
                logger.exception("generation failed")
                loop.call_soon_threadsafe(pieces.put_nowait, exc)

        submit(loop, job)
        return StreamingResponse(
            stream_events(pieces, cancel, completion_id, created, name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    app.state.assistant, app.state.queue_state, app.state.worker = assistant, state, worker
    return app


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> str:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
    return f"data: {json.dumps(body)}\n\n"


async def stream_events(pieces: asyncio.Queue, cancel: threading.Event, completion_id: str, created: int, model: str):
    """Server-sent events: role, answer pieces, the sources, a final chunk with citations, [DONE].

    If the client goes away, the response task is cancelled here or the generator is closed:
    either way `cancel` is set and the model stops at its next token.
    """
    try:
        yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
        while True:
            item = await pieces.get()
            if isinstance(item, Exception):
                error = {"error": {"message": f"generation failed: {item}", "type": "server_error", "code": None}}
                yield f"data: {json.dumps(error)}\n\n"
                break
            if isinstance(item, Answer):
                if item.citations:
                    yield _chunk(completion_id, created, model, {"content": "\n\nSources:\n" + item.sources_text()})
                yield _chunk(completion_id, created, model, {}, item.finish_reason,
                             citations=item.citations, covered=item.covered)
                break
            yield _chunk(completion_id, created, model, {"content": item})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()


def completion_body(answer: Answer, completion_id: str, created: int, model: str) -> dict:
    """A chat.completion object; citations in the text and as structured fields."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text_with_sources(), "citations": answer.citations},
            "finish_reason": answer.finish_reason,
        }],
        "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                  "total_tokens": answer.prompt_tokens + answer.completion_tokens},
        "citations": answer.citations,
        "covered": answer.covered,
    }


def serve(assistant: Assistant, settings: dict, host: str | None = None, port: int | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    host, port = host or settings["host"], port or settings["port"]
    logger.info("Serving %s on http://%s:%d/v1", assistant.name, host, port)
    uvicorn.run(create_app(assistant, settings), host=host, port=port, log_level="info")
