"""A real uvicorn server on 127.0.0.1 serving the assistant with the tiny random Gemma."""

from __future__ import annotations

import socket
import threading
import time

import httpx2 as httpx
import pytest

from kaggle_qa.assistant import Assistant
from kaggle_qa.assistant.server import create_app
from kaggle_qa.modeling import load_model, load_tokenizer
from kaggle_qa.retrieval import Retriever, build_index

from ..test_retrieval_and_assistant import CHUNKS

SETTINGS = {"host": "127.0.0.1", "port": 0, "max_pending": 2, "max_input_chars": 500, "max_body_bytes": 20000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn running `app` in a thread on a free port; stopped on exit."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny_assistant_for_server(tiny_gemma_path):
    return Assistant(
        load_model(tiny_gemma_path, dtype="float32"), load_tokenizer(tiny_gemma_path), Retriever(build_index(CHUNKS)),
        method="bm25", top_k=2, relevance_threshold=0.35, max_new_tokens=400, max_length=1024, name="kaggle-qa-tiny",
    )


@pytest.fixture
def live_server(tiny_assistant_for_server):
    app = create_app(tiny_assistant_for_server, SETTINGS)
    with LiveServer(app) as server:
        server.app = app
        yield server
    app.state.worker.shutdown(wait=True)


@pytest.fixture
def http(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=60) as client:
        yield client
