"""The OpenAI-compatible server on a real uvicorn on 127.0.0.1, driven by the real openai client."""

from __future__ import annotations

import json
import threading

import httpx2 as httpx
import openai
import pytest

from kaggle_qa.assistant import NOT_COVERED

from .conftest import SETTINGS

QUESTION = "Who can see a pending organization?"


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, **kwargs)


def test_health_and_models(http):
    assert http.get("/health").json()["status"] == "ok"
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["kaggle-qa-tiny"]


def test_openai_client_gets_an_answer_with_citations(live_server):
    reply = client(live_server).chat.completions.create(
        model="kaggle-qa-tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    message = reply.choices[0].message
    citations = message.model_extra["citations"]
    assert citations[0]["url"] == "https://www.kaggle.com/docs/organizations"
    assert citations[0]["heading_path"] == ["Organizations"]
    assert "\n\nSources:\n[1] https://www.kaggle.com/docs/organizations › Organizations" in message.content
    assert reply.model_extra["citations"] == citations and reply.model_extra["covered"] is True
    assert 1 <= reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 20
    assert reply.choices[0].finish_reason in {"stop", "length"}


def test_openai_client_streams_the_same_answer(live_server):
    api = client(live_server)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    whole = api.chat.completions.create(model="kaggle-qa-tiny", messages=messages, max_tokens=12)
    chunks = list(api.chat.completions.create(model="kaggle-qa-tiny", messages=messages, max_tokens=12, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text.strip() == whole.choices[0].message.content.strip()
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    assert chunks[-1].model_extra["citations"] == whole.model_extra["citations"]


def test_off_topic_question_gets_not_covered(live_server):
    reply = client(live_server).chat.completions.create(
        model="kaggle-qa-tiny", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert reply.choices[0].message.content == NOT_COVERED and reply.model_extra["covered"] is False
    assert reply.model_extra["citations"] == []


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
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(http, body, status, message):
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_openai_client_sees_unknown_model_as_not_found(live_server):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(live_server).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": QUESTION}])


def test_requests_beyond_the_bound_get_503_and_the_rest_are_served(live_server):
    """Eight requests at once, long answers (400 tokens): at most max_pending run or queue."""
    body = {"model": "kaggle-qa-tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 400}
    statuses: list[int] = []
    start = threading.Barrier(8)

    def one():
        with httpx.Client(base_url=live_server.base_url, timeout=120) as http:
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
    assert live_server.app.state.queue_state["pending"] == 0


def test_a_client_leaving_mid_stream_does_not_break_the_server(live_server, http):
    body = {"model": "kaggle-qa-tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 400,
            "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    # the stream was closed after one event; the server still answers, and frees its slot
    reply = client(live_server).chat.completions.create(
        model="kaggle-qa-tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=4
    )
    assert reply.choices[0].message.content
    health = http.get("/health").json()
    assert health["pending"] == 0 and health["served"] == 2
    assert health["cancelled"] == 1  # the model stopped generating for the client that left
