"""kedro-viz end to end: serve the project offline, read /api/main, render it in headless Chromium."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import skip_unless_ci_has

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INGESTION_NODES = ["crawl_docs", "clean_pages", "chunk_pages", "report_ingestion"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    """A free port below 49152 (kedro viz refuses the ephemeral range the OS hands out for port 0)."""
    for port in random.sample(range(20000, 49000), 50):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 49000")


@contextmanager
def process_group(command: list[str], log: Path, **kwargs):
    """Start ``command`` in its own process group and always stop the whole group (children too)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        try:
            yield process
        finally:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    time.sleep(0.5)  # let the group's other members exit too
                except subprocess.TimeoutExpired:
                    continue
            try:  # nothing of the group may survive
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def rendered_dom(chromium: str, page: str, tmp_path: Path, budget_ms: int, what: str) -> str:
    """The DOM of `page` after headless Chromium has run its scripts for `budget_ms` of virtual time."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
               "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}", "--dump-dom", page]
    with process_group(command, tmp_path / "chromium.log") as browser:
        try:
            browser.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"headless Chromium did not finish rendering {what} in 120 s")
    return (tmp_path / "chromium.log").read_text(errors="replace")


def wait_for_json(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"kedro viz exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            time.sleep(1)
    pytest.fail(f"kedro viz did not answer {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_kedro_viz_shows_the_ingestion_pipeline(tmp_path):
    chromium = shutil.which("chromium")
    skip_unless_ci_has(chromium is not None,
                       "Debian `chromium` is not installed (.ci/run installs it: apt-get install -y chromium)")
    port = free_port()
    kedro = str(Path(sys.executable).with_name("kedro"))
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"}
    viz_log = tmp_path / "viz.log"
    with process_group([kedro, "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
                       viz_log, cwd=PROJECT_ROOT, env=env) as viz:
        api = wait_for_json(f"http://127.0.0.1:{port}/api/main", viz, viz_log, timeout_s=120)
        tasks = {node["name"]: node for node in api["nodes"] if node["type"] == "task"}
        for name in INGESTION_NODES:
            assert "ingestion" in tasks[name]["pipelines"]
        assert {"ingestion", "synthesis", "train", "evaluate", "__default__"} <= {p["id"] for p in api["pipelines"]}

        dom = rendered_dom(chromium, f"http://127.0.0.1:{port}/?pipeline_id=ingestion", tmp_path, 20000, "kedro-viz")
    for name in INGESTION_NODES:  # node labels drawn in the flowchart's SVG
        assert re.search(rf'class="pipeline-node__text"[^>]*>{name}</text>', dom), f"{name} not rendered"
