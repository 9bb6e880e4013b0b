"""The kaggle-qa command line: dispatch to the assistant or to `kedro run`, ask --json, chat."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from kaggle_qa.assistant import NOT_COVERED
from kaggle_qa.assistant.cli import chat, print_answer


def _run(project_root, *args):
    env = os.environ | {"PYTHONPATH": str(project_root / "src"), "KEDRO_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "kaggle_qa", *args], cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_is_kedro_run_and_ask_is_the_assistant(project_root):
    kedro = _run(project_root, "run", "--pipeline", "no_such_pipeline")
    assert kedro.returncode != 0 and "no_such_pipeline" in kedro.stdout + kedro.stderr
    ask = _run(project_root, "ask", "--help")
    assert ask.returncode == 0 and "--json" in ask.stdout and "kaggle-qa ask" in ask.stdout


def test_ask_json_and_chat_session(tiny_assistant_for_server):
    out = io.StringIO()
    print_answer(tiny_assistant_for_server.ask("What is the capital of France?"), as_json=True, out=out)
    record = json.loads(out.getvalue())
    assert record["answer"] == NOT_COVERED and record["covered"] is False and record["citations"] == []

    questions = iter(["Who can see a pending organization?", "What is the capital of France?", ""])
    out = io.StringIO()
    chat(tiny_assistant_for_server, read=lambda prompt: next(questions), out=out)
    text = out.getvalue()
    assert "Q: Who can see a pending organization?" in text
    assert "[1] https://www.kaggle.com/docs/organizations › Organizations" in text
    assert f"A: {NOT_COVERED}" in text
