"""The OpenAI client suite: a real uvicorn on 127.0.0.1, driven by the real openai client.

Every test taking `served` runs twice: on our built-in engine, and on our front end over a real
OpenAI-compatible backend (a `kaggle-qa serve` process): retrieval, the refusal, citations and
request validation behave the same, and greedy answers are the same text.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx2 as httpx
import openai
import pytest

from kaggle_qa.assistant import NOT_COVERED
from kaggle_qa.prompting import render_prompt

from .conftest import SETTINGS

QUESTION = "Who can see a pending organization?"
MESSAGES = [{"role": "user", "content": QUESTION}]


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, **kwargs)


def answer_text(reply) -> str:
    return reply.choices[0].message.content.split("\n\nSources:\n")[0]


def test_health_and_models(served):
    with httpx.Client(base_url=served.base_url, timeout=60) as http:
        assert http.get("/health").json()["status"] == "ok"
        models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["kaggle-qa-tiny"]
    assert ("backend" in models["data"][0]) == (served.engine == "backend")


def test_openai_client_gets_an_answer_with_citations(served):
    reply = client(served).chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=8)
    message = reply.choices[0].message
    citations = message.model_extra["citations"]
    assert citations[0]["url"] == "https://www.kaggle.com/docs/organizations"
    assert citations[0]["heading_path"] == ["Organizations"]
    assert "\n\nSources:\n[1] https://www.kaggle.com/docs/organizations › Organizations" in message.content
    assert reply.model_extra["citations"] == citations and reply.model_extra["covered"] is True
    assert 1 <= reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 20
    assert reply.choices[0].finish_reason in {"stop", "length"}


def test_front_end_over_a_backend_answers_exactly_as_the_built_in_engine(tiny_assistant_for_server, served):
    """Same greedy answer, token for token: the backend got exactly the training prompt."""
    reply = client(served).chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=12)
    here = tiny_assistant_for_server.ask(QUESTION, max_new_tokens=12)
    assert answer_text(reply).strip() == here.answer and reply.usage.prompt_tokens == here.prompt_tokens


def test_openai_client_streams_the_same_answer(served):
    api = client(served)
    messages = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    whole = api.chat.completions.create(model="kaggle-qa-tiny", messages=messages, max_tokens=12)
    chunks = list(api.chat.completions.create(model="kaggle-qa-tiny", messages=messages, max_tokens=12, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text.strip() == whole.choices[0].message.content.strip()
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    assert chunks[-1].model_extra["citations"] == whole.model_extra["citations"]


def test_sampling_fields_are_honoured(served):
    api = client(served)
    greedy = answer_text(api.chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=24))
    # a stop string first met inside the answer (not at its start: the answer is shown stripped)
    at = next(i for i in range(4, len(greedy) - 3) if greedy.find(greedy[i : i + 3]) == i and greedy[i] != " ")
    stop = greedy[at : at + 3]
    cut = api.chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=24, stop=[stop, "\x00"])
    assert answer_text(cut) == greedy[:at].strip() and cut.choices[0].finish_reason == "stop"
    streamed = api.chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=24, stop=stop,
                                           stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed).split("\n\nSources:")[0].strip() == answer_text(cut)
    sampled = [answer_text(api.chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=12,
                                                       temperature=1.5, top_p=0.95, seed=1)) for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed makes sampling repeatable (one worker thread per model)
    assert sampled[0] != greedy[: len(sampled[0])]  # a random model at temperature 1.5 leaves the greedy path


def test_off_topic_question_gets_not_covered(served):
    reply = client(served).chat.completions.create(
        model="kaggle-qa-tiny", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert reply.choices[0].message.content == NOT_COVERED and reply.model_extra["covered"] is False
    assert reply.model_extra["citations"] == []


def _chat(**fields) -> bytes:
    return json.dumps({"model": "kaggle-qa-tiny", "messages": MESSAGES} | fields).encode()


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"messages": [', 400, "malformed JSON"),
        (b"[1, 2]", 400, "must be an object"),
        (json.dumps({"model": "kaggle-qa-tiny"}).encode(), 400, "'messages' is missing or empty"),
        (json.dumps({"messages": []}).encode(), 400, "'messages' is missing or empty"),
        (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), 400, "no message with role 'user'"),
        (json.dumps({"messages": [{"content": "no role"}]}).encode(), 400, "messages.0.role"),
        (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "q"}]}).encode(), 404, "'gpt-9'"),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 501}]}).encode(), 413, "exceeds 500"),
        (b" " * 20001, 413, "exceeds 20000"),
        # the sampling fields, in OpenAI's ranges
        (_chat(max_tokens=-5), 400, "max_tokens: Input should be greater than or equal to 1"),
        (_chat(max_tokens=0), 400, "max_tokens: Input should be greater than or equal to 1"),
        (_chat(max_tokens="12"), 400, "max_tokens: Input should be a valid integer"),
        (_chat(max_completion_tokens=-1), 400, "max_completion_tokens: Input should be greater than or equal to 1"),
        (_chat(temperature=2.5), 400, "temperature: Input should be less than or equal to 2"),
        (_chat(temperature=-0.1), 400, "temperature: Input should be greater than or equal to 0"),
        (_chat(top_p=1.5), 400, "top_p: Input should be less than or equal to 1"),
        (_chat(top_p=0), 400, "top_p: Input should be greater than 0"),
        (_chat(n=2), 400, "n: only n=1 is supported"),
        (_chat(n=0), 400, "n: Input should be greater than or equal to 1"),
        (_chat(stop=["a", "b", "c", "d", "e"]), 400, "stop: List should have at most 4 items"),
        (_chat(stop=""), 400, "stop: a stop string must not be empty"),
        (_chat(stream="yes"), 400, "stream: Input should be a valid boolean"),
        (_chat(presence_penalty=3), 400, "presence_penalty: Input should be less than or equal to 2"),
        (_chat(frequency_penalty=-2.5), 400, "frequency_penalty: Input should be greater than or equal to -2"),
        (_chat(seed="x"), 400, "seed: Input should be a valid integer"),
        (_chat(logprobs=True), 400, "logprobs: log-probabilities are not served by kaggle-qa"),
        (_chat(top_logprobs=21), 400, "top_logprobs: Input should be less than or equal to 20"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(served, body, status, message):
    with httpx.Client(base_url=served.base_url, timeout=60) as http:
        response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    if status == 400 and ":" in message and not message.startswith("'"):
        assert response.json()["error"]["param"] == message.split(":")[0]


def test_openai_client_sees_bad_fields_and_unknown_model_as_errors(served):
    api = client(served)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        api.chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=-5)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="gpt-9", messages=MESSAGES)


def test_completions_endpoint_continues_the_training_prompt(tiny_assistant_for_server, served):
    """/v1/completions is the engine alone: the rendered prompt gives the assistant's own answer."""
    here = tiny_assistant_for_server.ask(QUESTION, max_new_tokens=10)
    hits = tiny_assistant_for_server.retriever.retrieve(QUESTION, 2, "bm25").hits
    prompt = render_prompt("\n\n".join(hit["text"] for hit in hits), QUESTION)
    api = client(served)
    reply = api.completions.create(model="kaggle-qa-tiny", prompt=prompt, max_tokens=10)
    assert reply.choices[0].text.strip() == here.answer and reply.usage.prompt_tokens == here.prompt_tokens
    streamed = api.completions.create(model="kaggle-qa-tiny", prompt=prompt, max_tokens=10, stream=True,
                                      stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks).strip() == here.answer
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"} and chunks[-1].usage.prompt_tokens > 20
    with httpx.Client(base_url=served.base_url, timeout=60) as http:
        for body, message in [({"prompt": ["a", "b"]}, "not a batch"), ({"prompt": prompt, "max_tokens": -5},
                              "max_tokens"), ({"prompt": prompt, "echo": True}, "echo is not supported"),
                              ({"prompt": "x " * 1100}, "leaves room for")]:
            response = http.post("/v1/completions", json={"model": "kaggle-qa-tiny"} | body)
            assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_requests_beyond_the_bound_get_503_and_the_rest_are_served(served):
    """Eight requests at once, answers of 60 tokens: at most max_pending run or queue."""
    body = {"model": "kaggle-qa-tiny", "messages": MESSAGES, "max_tokens": 60}
    statuses: list[int] = []
    start = threading.Barrier(8)

    def one():
        with httpx.Client(base_url=served.base_url, timeout=120) as http:
            start.wait()
            response = http.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert "server busy" in response.json()["error"]["message"]
                assert response.headers["retry-after"] == "1"

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1
    assert statuses.count(200) + statuses.count(503) == 8
    assert statuses.count(200) <= SETTINGS["max_pending"] + 2  # a slot frees only when an answer is done
    assert served.app.state.queue_state["pending"] == 0


def test_a_client_leaving_mid_stream_does_not_break_the_server(served, request):
    body = {"model": "kaggle-qa-tiny", "messages": MESSAGES, "max_tokens": 400, "stream": True}
    backend = request.getfixturevalue("backend_process") if served.engine == "backend" else None
    before = httpx.get(backend.base_url + "/health").json()["cancelled"] if backend else 0
    with httpx.Client(base_url=served.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
            next(line for line in lines if line.startswith("data: "))  # the first piece of the answer
        # the stream was closed after one piece; the server still answers, and frees its slot
        reply = client(served).chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=4)
        assert reply.choices[0].message.content
        health = http.get("/health").json()
    assert health["pending"] == 0 and health["served"] == 2
    assert health["cancelled"] == 1  # generation stopped for the client that left
    if backend:  # and the front end closed its stream to the backend, which stopped too
        deadline = time.monotonic() + 30
        while httpx.get(backend.base_url + "/health").json()["cancelled"] == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(backend.base_url + "/health").json()["cancelled"] == before + 1


def test_an_unreachable_backend_is_a_502_naming_it(tiny_gemma_path):
    from kaggle_qa.assistant.backend import OpenAIBackend
    from kaggle_qa.assistant.server import create_app

    from .conftest import LiveServer, assistant_over, free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    app = create_app(assistant_over(OpenAIBackend(url, "some-model", timeout_s=5), tiny_gemma_path), SETTINGS)
    with LiveServer(app) as server:
        with pytest.raises(openai.InternalServerError, match=re.escape(f"backend {url}/completions unreachable")):
            client(server).chat.completions.create(model="kaggle-qa-tiny", messages=MESSAGES, max_tokens=4)
    app.state.worker.shutdown(wait=True)
