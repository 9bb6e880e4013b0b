"""An OpenAI-compatible HTTP server for the assistant (FastAPI + uvicorn, 127.0.0.1 by default).

Endpoints:

- ``POST /v1/chat/completions``: the assistant. The question is the last user message; it is
  answered from retrieved chunks (or refused as not covered), and the answer's citations are
  appended to the message text ("Sources: [1] url › heading") and given as a structured
  ``citations`` field (on the message, and on the last stream chunk). ``stream: true`` answers
  as server-sent events.
- ``POST /v1/completions``: the engine alone: the prompt (text or token ids) is continued by
  the model, no retrieval. Another front end (``kaggle-qa serve --backend-url``) sends the
  rendered training prompt here.
- ``GET /v1/models`` (the model card names the documentation's domain), ``GET /health``.

Generation runs on this process's model, on one worker thread (requests queue onto it), or on
an OpenAI-compatible backend server (several requests at once). At most ``max_pending``
requests may be running or queued; more get 503 with ``Retry-After``.

Bad requests get a 4xx with an OpenAI-style ``{"error": {"message", "type", "param", "code"}}``
body: malformed JSON, no messages, or a field out of OpenAI's range (``max_tokens: -5``,
``temperature: 3``, ``n: 2``, five ``stop`` strings, ``stream: "yes"``) 400 naming the field;
unknown model 404; oversized body or question 413. A failing backend gives 502.
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
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from .core import Answer, Assistant, Generation, Sampling

logger = logging.getLogger(__name__)

Probability = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class SamplingFields(BaseModel):
    """The sampling fields both endpoints share, with OpenAI's ranges. Unknown fields are
    ignored (OpenAI clients send many); known ones out of range are a 400 naming the field."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    n: PositiveInt = 1
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    seed: StrictInt | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"only n=1 is supported (one answer per request), got {n}")
        return n

    @field_validator("stop")
    @classmethod
    def _non_empty_stop(cls, stop):
        if stop == "":
            raise ValueError("a stop string must not be empty")
        return stop

    def sampling(self) -> Sampling:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=stops)


class ChatRequest(SamplingFields):
    """An OpenAI chat-completions request (the fields the assistant uses or checks)."""

    messages: list[Message]
    max_completion_tokens: PositiveInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None  # accepted, not enforced: answers are prose

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs):
        if logprobs:
            raise ValueError("log-probabilities are not served by kaggle-qa (use a vLLM backend for them)")
        return logprobs


class CompletionRequest(SamplingFields):
    """An OpenAI (legacy) completions request: one prompt, as text or token ids."""

    prompt: str | list[StrictInt]
    echo: StrictBool = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None
    best_of: PositiveInt | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if not prompt:
            raise ValueError("the prompt is empty")
        return prompt

    @field_validator("echo", "logprobs", "suffix")
    @classmethod
    def _unsupported(cls, value, info):
        if value:
            raise ValueError(f"{info.field_name} is not supported by kaggle-qa (use a vLLM backend for it)")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value):
        if value not in (None, 1):
            raise ValueError(f"only best_of=1 is supported, got {value}")
        return value


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None,
                   param: str | None = None) -> JSONResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def question_of(request: ChatRequest) -> str:
    """The text of the last user message (string content or OpenAI content parts)."""
    if not request.messages:
        raise RequestError(400, "'messages' is empty: send at least one user message", "no_messages", "messages")
    user = [m for m in request.messages if m.role == "user"]
    if not user:
        raise RequestError(400, "no message with role 'user' in 'messages'", "no_user_message", "messages")
    content = user[-1].content
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    if not content or not content.strip():
        raise RequestError(400, "the last user message has no text", "empty_message", "messages")
    return content.strip()


def _payload(body: bytes, settings: dict) -> dict:
    if len(body) > settings["max_body_bytes"]:
        raise RequestError(413, f"request body of {len(body)} bytes exceeds {settings['max_body_bytes']}", "too_large")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON body: {exc}", "invalid_json") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "the JSON body must be an object", "invalid_json")
    return payload


def _validate(model: type[BaseModel], payload: dict) -> Any:
    """The request as `model`; a 400 naming every invalid field (the first as `param`)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors()
        # a union field (stop: str | list[str]): keep the branch that matched the value's type
        constrained = {e["loc"][0] for e in errors if not e["type"].endswith("_type")}
        errors = [e for e in errors if not (e["type"].endswith("_type") and e["loc"][0] in constrained)] or errors
        problems, params = [], []
        for error in errors:
            # drop pydantic's union-branch names ("str", "list[constrained-str]") from the field path
            where = ".".join(str(p) for p in error["loc"] if isinstance(p, int) or not _is_type_tag(str(p)))
            params.append(where)
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        unique = list(dict.fromkeys(problems))
        raise RequestError(400, "invalid request: " + "; ".join(unique), "invalid_request", params[0]) from None


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in {"str", "int", "float", "bool", "list", "dict", "constrained-int",
                                   "constrained-float", "constrained-str"}


def _check_model(requested: str | None, model_name: str) -> None:
    if requested and requested != model_name:
        raise RequestError(404, f"model {requested!r} does not exist; this server serves {model_name!r}",
                           "model_not_found", "model")


def parse_request(body: bytes, settings: dict, model_name: str) -> tuple[ChatRequest, str]:
    """Validate a raw chat-completions body; raises :class:`RequestError` with the status and a message."""
    payload = _payload(body, settings)
    if not payload.get("messages"):
        raise RequestError(400, "'messages' is missing or empty: send at least one user message", "no_messages",
                           "messages")
    request = _validate(ChatRequest, payload)
    _check_model(request.model, model_name)
    question = question_of(request)
    if len(question) > settings["max_input_chars"]:
        raise RequestError(413, f"question of {len(question)} characters exceeds {settings['max_input_chars']}",
                           "too_large", "messages")
    return request, question


def parse_completion_request(body: bytes, settings: dict, model_name: str) -> CompletionRequest:
    """Validate a raw completions body (one prompt, text or token ids)."""
    payload = _payload(body, settings)
    if isinstance(payload.get("prompt"), list) and payload["prompt"] and not isinstance(payload["prompt"][0], int):
        raise RequestError(400, "prompt: one prompt per request (a string or a list of token ids), not a batch",
                           "invalid_request", "prompt")
    request = _validate(CompletionRequest, payload)
    _check_model(request.model, model_name)
    return request


def model_card(assistant: Assistant) -> dict:
    """The /v1/models entry: the served name, and the documentation it answers about."""
    card = {"id": assistant.name, "object": "model", "created": 0, "owned_by": "kaggle-qa"}
    domain = getattr(assistant, "domain", None)
    if domain is not None:
        card["domain"] = {"name": domain.name, "docs_title": domain.docs_title, "docs_url": domain.docs_url}
    backend = getattr(assistant, "backend", None)
    if backend is not None:
        card["backend"] = {"url": backend.base_url, "model": backend.model, "api": backend.api}
    return card


def create_app(assistant: Assistant, settings: dict) -> FastAPI:
    """The FastAPI app serving `assistant` (already loaded) with the `assistant.server` settings."""
    from .backend import BackendError

    app = FastAPI(title="kaggle-qa assistant", version="1")
    # one model in this process: one thread; a backend server batches: as many as may be pending
    threads = settings["max_pending"] if getattr(assistant, "backend", None) is not None else 1
    worker = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kaggle-qa-model")
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

    def busy() -> JSONResponse | None:
        if state["pending"] >= settings["max_pending"]:
            return error_response(
                503, f"server busy: {state['pending']} requests running or queued (max_pending"
                f" {settings['max_pending']}); retry later", "busy", headers={"Retry-After": "1"},
            )
        return None

    def token_limit(requested: int | None) -> int:
        """The request's max_tokens, capped at the server's assistant.max_new_tokens."""
        return max(1, min(requested or assistant.max_new_tokens, assistant.max_new_tokens))

    async def run(loop, job):
        try:
            return await submit(loop, job)
        except BackendError as exc:
            logger.warning("%s", exc)
            raise RequestError(502, str(exc), "backend_error") from None

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "max_pending": settings["max_pending"], **state}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(assistant)]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            chat, question = parse_request(await request.body(), settings, name)
        except RequestError as exc:
            return error_response(exc.status, exc.message, exc.code, param=exc.param)
        if (refusal := busy()) is not None:
            return refusal
        max_new_tokens = token_limit(chat.max_completion_tokens or chat.max_tokens)
        sampling = chat.sampling()
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        loop = asyncio.get_running_loop()
        if not chat.stream:
            try:
                answer = await run(loop, lambda: assistant.ask(question, max_new_tokens=max_new_tokens, sampling=sampling))
            except RequestError as exc:
                return error_response(exc.status, exc.message, exc.code)
            return completion_body(answer, completion_id, created, name)
        pieces: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def job():
            try:
                answer = assistant.ask(question, max_new_tokens=max_new_tokens, cancel=cancel, sampling=sampling,
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

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            completion = parse_completion_request(await request.body(), settings, name)
            max_new_tokens = token_limit(completion.max_tokens)
            prompt = prompt_ids(assistant, completion.prompt, max_new_tokens)
        except RequestError as exc:
            return error_response(exc.status, exc.message, exc.code, param=exc.param)
        if (refusal := busy()) is not None:
            return refusal
        sampling = completion.sampling()
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        loop = asyncio.get_running_loop()
        if not completion.stream:
            try:
                generated = await run(loop, lambda: assistant.generate(prompt, max_new_tokens, sampling=sampling))
            except RequestError as exc:
                return error_response(exc.status, exc.message, exc.code)
            return text_completion_body(generated, completion_id, created, name)
        pieces: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        include_usage = bool((completion.stream_options or {}).get("include_usage"))

        def job():
            try:
                generated = assistant.generate(prompt, max_new_tokens, sampling=sampling, cancel=cancel,
                                               on_text=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text))
                if cancel.is_set():
                    state["cancelled"] += 1
                loop.call_soon_threadsafe(pieces.put_nowait, generated)
            except Exception as exc:
                logger.exception("generation failed")
                loop.call_soon_threadsafe(pieces.put_nowait, exc)

        submit(loop, job)
        return StreamingResponse(
            completion_events(pieces, cancel, completion_id, created, name, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    app.state.assistant, app.state.queue_state, app.state.worker = assistant, state, worker
    return app


def prompt_ids(assistant: Assistant, prompt: str | list[int], max_new_tokens: int) -> list[int]:
    """Token ids of a completions prompt: ids as given, or the text tokenized with BOS first
    (as vLLM does), so the rendered training prompt gives exactly the training tokens."""
    tokenizer = assistant.tokenizer
    if isinstance(prompt, list):
        ids = list(prompt)
        if max(ids) >= len(tokenizer) or min(ids) < 0:
            raise RequestError(400, f"prompt: token ids must lie in [0, {len(tokenizer)})", "invalid_request", "prompt")
    else:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
            ids = [tokenizer.bos_token_id, *ids]
    room = assistant.max_length - max_new_tokens
    if len(ids) > room:
        raise RequestError(400, f"prompt: {len(ids)} tokens, but max_length {assistant.max_length} minus "
                           f"max_tokens {max_new_tokens} leaves room for {room}", "context_length_exceeded", "prompt")
    return ids


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> str:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
    return f"data: {json.dumps(body)}\n\n"


def _error_event(item: Exception) -> str:
    error = {"error": {"message": f"generation failed: {item}", "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(error)}\n\n"


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
                yield _error_event(item)
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


async def completion_events(pieces: asyncio.Queue, cancel: threading.Event, completion_id: str, created: int,
                            model: str, include_usage: bool):
    """Server-sent text_completion events, the last with the finish reason (and usage if asked), [DONE]."""

    def event(text: str, finish_reason: str | None = None, **extra) -> str:
        body = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    try:
        while True:
            item = await pieces.get()
            if isinstance(item, Exception):
                yield _error_event(item)
                break
            if isinstance(item, Generation):
                yield event("", item.finish_reason, **({"usage": _usage(item)} if include_usage else {}))
                break
            yield event(item)
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()


def _usage(generated: Generation | Answer) -> dict:
    return {"prompt_tokens": generated.prompt_tokens, "completion_tokens": generated.completion_tokens,
            "total_tokens": generated.prompt_tokens + generated.completion_tokens}


def text_completion_body(generated: Generation, completion_id: str, created: int, model: str) -> dict:
    """A text_completion object."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": generated.text, "logprobs": None, "finish_reason": generated.finish_reason}],
        "usage": _usage(generated),
    }


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
        "usage": _usage(answer),
        "citations": answer.citations,
        "covered": answer.covered,
    }


def serve(assistant: Assistant, settings: dict, host: str | None = None, port: int | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    host, port = host or settings["host"], port or settings["port"]
    engine = f"backend {assistant.backend.base_url} ({assistant.backend.model})" if assistant.backend else "built-in engine"
    logger.info("Serving %s on http://%s:%d/v1 (%s)", assistant.name, host, port, engine)
    uvicorn.run(create_app(assistant, settings), host=host, port=port, log_level="info")
