"""The openai teacher against a real chat-completions server on 127.0.0.1 (no mocked client)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaggle_qa.pipelines.synthesis.nodes import render_teacher_prompt
from kaggle_qa.pipelines.synthesis.http_faults import TeacherUnreachable
from kaggle_qa.pipelines.synthesis.teachers.base import parse_reply
from kaggle_qa.pipelines.synthesis.teachers.openai_teacher import OpenAITeacher

from .chat_server import ChatServer, Reply, good_content

API_KEY = "sk-test-0123456789-secret"


@pytest.fixture
def teacher_params(params):
    """Fast retries and a short timeout, so failure paths take milliseconds."""
    return params["openai"] | {
        "model": "test-model",
        "timeout_s": 1.0,
        "max_retries": 2,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "concurrency": 2,
        "max_failed_share": 1.0,
    }


@pytest.fixture
def prompts(chunks, params, project_root):
    template = (project_root / "conf/base/prompts/synthesis_v3.txt").read_text()
    return [render_teacher_prompt(template, chunk, params["versions"]["v3"]) for chunk in chunks]


def run(server, teacher_params, prompts, key=API_KEY):
    teacher = OpenAITeacher(teacher_params | {"base_url": server.base_url}, key)
    return teacher, teacher.complete_all(prompts)


def test_good_replies_become_rows_with_usage_counted(chunks, params, teacher_params, prompts):
    with ChatServer() as server:
        teacher, replies = run(server, teacher_params, prompts)
    assert server.count == len(prompts)
    body = server.requests[0]
    assert body["model"] == "test-model" and body["response_format"] == {"type": "json_object"}
    assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"
    rows, problems = parse_reply(replies[0], chunks[0], params["versions"]["v3"], "openai:test-model")
    assert problems == [] and len(rows) == 2
    assert rows[0]["input"] == chunks[0]["text"] and rows[0]["chunk_id"] == chunks[0]["chunk_id"]
    assert {r["task_type"] for r in rows} == {"extractive_qa", "true_false"}
    stats = teacher.stats.as_dict()
    assert stats["prompt_tokens"] == 100 * len(prompts) and stats["completion_tokens"] == 40 * len(prompts)


@pytest.mark.parametrize(
    "content, reason",
    [
        ("this is not json {", "not JSON"),
        ("", "empty"),
        (json.dumps({"answers": []}), "no 'pairs' list"),
        (json.dumps({"pairs": [{"instruction": "Where?", "output": 3}]}), "missing or non-string ['output']"),
        (json.dumps({"pairs": ["just a string"]}), "not an object"),
    ],
)
def test_malformed_replies_are_reported_not_raised(chunks, params, teacher_params, prompts, content, reason):
    with ChatServer(lambda n, body: content) as server:
        _, replies = run(server, teacher_params, prompts[:1])
    rows, problems = parse_reply(replies[0], chunks[0], params["versions"]["v3"], "t")
    assert rows == []
    assert len(problems) == 1 and reason in problems[0]["reason"]


def test_429_then_success_is_retried_and_counted(teacher_params, prompts):
    behaviour = lambda n, body: Reply(status=429, headers={"Retry-After": "0"}) if n == 0 else good_content(body)
    with ChatServer(behaviour) as server:
        teacher, replies = run(server, teacher_params | {"concurrency": 1}, prompts[:1])
    assert server.count == 2
    assert "content" in replies[0]
    assert teacher.stats.retries_rate_limit == 1 and teacher.stats.requests == 2


def test_timeout_then_success(teacher_params, prompts):
    behaviour = lambda n, body: Reply(content=good_content(body), delay_s=2.0) if n == 0 else good_content(body)
    with ChatServer(behaviour) as server:
        teacher, replies = run(server, teacher_params | {"timeout_s": 0.3, "concurrency": 1}, prompts[:1])
    assert teacher.stats.retries_timeout == 1
    assert "content" in replies[0] and server.count == 2


def test_persistent_5xx_fails_the_request_not_the_run_until_too_many(teacher_params, prompts):
    with ChatServer(lambda n, body: Reply(status=503)) as server:
        teacher, replies = run(server, teacher_params, prompts[:2])
        assert all("error" in reply for reply in replies)
        assert server.count == 2 * (teacher_params["max_retries"] + 1)
        assert teacher.stats.failed_requests == 2
        with pytest.raises(RuntimeError, match="2 of 2 requests failed"):
            run(server, teacher_params | {"max_failed_share": 0.5}, prompts[:2])


def test_bad_key_stops_at_once_without_showing_the_key(teacher_params, prompts, caplog):
    with ChatServer(lambda n, body: Reply(status=401, content="bad key")) as server:
        with pytest.raises(RuntimeError, match="HTTP 401") as error:
            run(server, teacher_params, prompts[:1])
    assert server.count == 1
    assert API_KEY not in str(error.value) and API_KEY not in caplog.text


def test_missing_key_is_a_clear_error(teacher_params):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAITeacher(teacher_params, None)
    OpenAITeacher(teacher_params | {"api_key_required": False}, None)  # a local server without keys


def test_second_run_is_served_from_the_cache(teacher_params, prompts):
    with ChatServer() as server:
        _, first = run(server, teacher_params, prompts)
        sent = server.count
        teacher, second = run(server, teacher_params, prompts)
    assert sent == len(prompts) and server.count == sent  # zero new requests
    assert second == first and teacher.stats.cache_hits == len(prompts)
    cached = list(Path(teacher_params["cache_dir"]).rglob("*.json"))
    assert len(cached) == len(prompts)
    assert not any(API_KEY in path.read_text() for path in cached)


def test_a_killed_run_resumes_with_only_the_missing_requests(teacher_params, prompts):
    answered_before_hang = 3
    hang = lambda n, body: (
        Reply(content=good_content(body), delay_s=60) if n >= answered_before_hang else good_content(body)
    )
    child = (
        "import json, sys\n"
        "from kaggle_qa.pipelines.synthesis.teachers.openai_teacher import OpenAITeacher\n"
        "params, prompts = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "OpenAITeacher(params, 'sk-child').complete_all(prompts)\n"
    )
    with ChatServer(hang) as server:
        params = teacher_params | {"base_url": server.base_url, "concurrency": 1, "timeout_s": 120}
        process = subprocess.Popen([sys.executable, "-c", child, json.dumps(params), json.dumps(prompts)])
        try:
            deadline = time.monotonic() + 60
            while server.count <= answered_before_hang and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.count == answered_before_hang + 1  # the 4th request is in flight
        finally:
            process.kill()
            process.wait()
        server.behaviour = lambda n, body: good_content(body)
        before = server.count
        teacher, replies = run(server, teacher_params, prompts)
    assert server.count - before == len(prompts) - answered_before_hang
    assert teacher.stats.cache_hits == answered_before_hang
    assert all("content" in reply for reply in replies)


PROXY_PAGE = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_a_200_that_is_not_json_is_retried_then_quarantined_naming_the_url(
    chunks, params, teacher_params, prompts, content_type
):
    attempts = teacher_params["max_retries"] + 1
    # the first prompt gets the proxy page on every attempt, the second once (then a good reply)
    proxy = lambda n, body: Reply(raw=PROXY_PAGE, content_type=content_type) if n <= attempts else good_content(body)
    with ChatServer(proxy) as server:
        teacher, replies = run(server, teacher_params | {"concurrency": 1}, prompts[:2])
    assert server.count == attempts + 2
    assert teacher.stats.retries_malformed == attempts and teacher.stats.failed_requests == 1
    rows, problems = parse_reply(replies[0], chunks[0], params["versions"]["v3"], "t")
    assert rows == [] and len(problems) == 1
    reason = problems[0]["reason"]
    assert reason.startswith("teacher request failed: ") and f"{server.base_url}/chat/completions" in reason
    assert "HTTP 200" in reason and f"after {attempts} attempts" in reason
    assert "content" in replies[1]
    cached = list(Path(teacher_params["cache_dir"]).rglob("*.json"))
    assert len(cached) == 1  # a failure is not cached: a re-run asks again


def test_an_unreachable_endpoint_trips_the_circuit_breaker_early_naming_it(teacher_params, prompts):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    many = (prompts * 24)[:24]
    many = [f"{prompt}\n(variant {i})" for i, prompt in enumerate(many)]  # 24 distinct requests
    params = teacher_params | {"base_url": base_url, "max_retries": 5, "concurrency": 4, "circuit_breaker_failures": 8}
    teacher = OpenAITeacher(params, API_KEY)
    with pytest.raises(TeacherUnreachable, match=f"teacher endpoint {base_url}/chat/completions unreachable: 8 "):
        teacher.complete_all(many)
    assert 8 <= teacher.stats.requests <= 8 + params["concurrency"]  # not 24 * 6 = 144
