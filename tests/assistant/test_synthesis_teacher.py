"""Our synthesis openai teacher pointed at the assistant's server: the two are interchangeable.

The tiny random Gemma cannot write the teacher's JSON, so every reply is parsed into a
"not JSON" (or "truncated at max_tokens") problem (quarantined by the pipeline; a teacher prompt is mostly instructions, so
the server may also judge it not covered by the docs), but every request goes through the
real client with the teacher's own settings (system message, JSON response format,
max_tokens), is answered 200 with usage, and nothing raises.
"""

from __future__ import annotations

import copy

import yaml

from kaggle_qa.assistant.server import create_app
from kaggle_qa.pipelines.synthesis.nodes import render_teacher_prompt
from kaggle_qa.pipelines.synthesis.teachers.base import parse_reply
from kaggle_qa.pipelines.synthesis.teachers.openai_teacher import OpenAITeacher

from ..test_retrieval_and_assistant import CHUNKS
from .conftest import SETTINGS, LiveServer


def test_synthesis_openai_teacher_runs_against_the_assistant_server(tiny_assistant_for_server, project_root, tmp_path):
    synthesis = yaml.safe_load((project_root / "conf/base/parameters_synthesis.yml").read_text())["synthesis"]
    recipe = synthesis["versions"]["v3"]
    template = (project_root / "conf/base/prompts/synthesis_v3.txt").read_text()
    prompts = [render_teacher_prompt(template, chunk, recipe) for chunk in CHUNKS]
    settings = SETTINGS | {"max_input_chars": 20000, "max_pending": 8}
    app = create_app(tiny_assistant_for_server, settings)
    with LiveServer(app) as server:
        params = copy.deepcopy(synthesis["openai"]) | {
            "base_url": server.base_url + "/v1",
            "model": "kaggle-qa-tiny",
            "api_key_required": False,
            "max_tokens": 16,
            "cache_dir": str(tmp_path / "cache"),
            "max_failed_share": 0.0,
        }
        teacher = OpenAITeacher(params, None)
        replies = teacher.complete_all(prompts)
    app.state.worker.shutdown(wait=True)
    assert all("error" not in reply and reply["content"] for reply in replies)
    stats = teacher.stats.as_dict()
    assert stats["requests"] == len(prompts) and stats["failed_requests"] == 0
    assert stats["completion_tokens"] <= 16 * len(prompts)  # the teacher's max_tokens is honoured
    rows, problems = parse_reply(replies[0], CHUNKS[0] | {"n_words": 15}, recipe, "openai:kaggle-qa-tiny")
    # random text: not JSON, or (cut at the 16 tokens asked for) JSON truncated at max_tokens
    assert rows == [] and problems[0]["reason"].split(" (")[0] in {
        "malformed reply: not JSON", "malformed reply: truncated at max_tokens"}
    assert replies[0]["finish_reason"] in {"stop", "length"}
