"""A real uvicorn server on 127.0.0.1 serving the assistant with the tiny random Gemma.

`served` runs each client test twice: against our built-in engine, and against our front end
whose generation goes to a real OpenAI-compatible backend: a `kaggle-qa serve` process on
127.0.0.1 (tiny Gemma, configured through `--conf-source`, as a user would point it at theirs).
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import pytest

import yaml

from kaggle_qa.assistant import Assistant
from kaggle_qa.assistant.backend import OpenAIBackend
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


def assistant_over(backend: OpenAIBackend, tiny_gemma_path: str) -> Assistant:
    """The front end: same retrieval and settings as the built-in one, generation on `backend`."""
    return Assistant(
        None, load_tokenizer(tiny_gemma_path), Retriever(build_index(CHUNKS)), method="bm25", top_k=2,
        relevance_threshold=0.35, max_new_tokens=400, max_length=1024, name="kaggle-qa-tiny", backend=backend,
    )


def write_conf_source(folder, project_root, tiny_gemma_path) -> str:
    """A copy of the project's conf/ whose `local` env points the catalog at the tiny Gemma and an
    index of CHUNKS: what `--conf-source` gives a `kaggle-qa` process."""
    conf = folder / "conf"
    shutil.copytree(project_root / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    index = folder / "retrieval_index.pkl"
    index.write_bytes(pickle.dumps(build_index(CHUNKS)))
    catalog = {
        "base_model": {"type": "kaggle_qa.datasets.BaseModelDataset", "source": tiny_gemma_path},
        "retrieval_index": {"type": "pickle.PickleDataset", "filepath": str(index)},
    }
    params = {
        "retrieval": {"method": "bm25", "top_k": 2, "relevance_threshold": 0.35},
        "assistant": {"dtype": "float32", "max_new_tokens": 400, "max_length": 1024, "model_name": "kaggle-qa-tiny",
                      "server": {"max_pending": 4, "max_input_chars": 20000, "max_body_bytes": 200000}},
    }
    (conf / "local" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    (conf / "local" / "parameters.yml").write_text(yaml.safe_dump(params))
    return str(conf)


def kaggle_qa_command(project_root, *args) -> tuple[list[str], dict]:
    env = os.environ | {"PYTHONPATH": str(project_root / "src"), "KEDRO_DISABLE_TELEMETRY": "1",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return [sys.executable, "-m", "kaggle_qa", *args], env


class ServeProcess:
    """`kaggle-qa serve …` as a real child process on a free port; stopped on exit."""

    def __init__(self, project_root, *args):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command, self.env = kaggle_qa_command(project_root, "serve", "--port", str(self.port), *args)
        self.cwd = project_root

    def __enter__(self):
        import httpx2 as httpx

        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kaggle-qa serve exited {self.process.returncode}:\n{self.process.stdout.read()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("kaggle-qa serve did not answer /health in 240 s")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def conf_source(project_root, tiny_gemma_path, tmp_path_factory) -> str:
    return write_conf_source(tmp_path_factory.mktemp("conf_source"), project_root, tiny_gemma_path)


@pytest.fixture(scope="session")
def backend_process(project_root, conf_source):
    """Our own `kaggle-qa serve` (built-in engine, tiny Gemma) as the backend server."""
    with ServeProcess(project_root, "--conf-source", conf_source, "--base-only") as server:
        yield server


@pytest.fixture(scope="session")
def frontend_assistant(backend_process, tiny_gemma_path):
    return assistant_over(OpenAIBackend(backend_process.base_url + "/v1"), tiny_gemma_path)


@pytest.fixture(params=["builtin", "backend"])
def served(request, tiny_assistant_for_server):
    """Our server on 127.0.0.1: generating itself, or as a front end over `backend_process`."""
    if request.param == "builtin":
        assistant = tiny_assistant_for_server
    else:
        assistant = request.getfixturevalue("frontend_assistant")
    app = create_app(assistant, SETTINGS)
    with LiveServer(app) as server:
        server.app, server.engine = app, request.param
        yield server
    app.state.worker.shutdown(wait=True)
