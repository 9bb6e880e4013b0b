"""Stopping a run stops its crawl: kill the parent of a real Scrapy child and watch the server go quiet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import PROJECT_ROOT, base_ingestion_params
from .hostile_site import EndlessSlowSiteHandler, serve

# Ctrl-C as in a terminal: a background job of a non-interactive shell (`nohup make test &`,
# some CI runners) starts with SIGINT ignored, and Python then installs no KeyboardInterrupt
# handler, so the SIGINT case would test the shell instead of the crawl.
PARENT = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from kaggle_qa.pipelines.ingestion.spider import crawl_site
crawl_site(sys.argv[1], json.loads(sys.argv[2]))
"""


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killing_the_parent_stops_the_crawl_child(sig):
    crawl = base_ingestion_params()["crawl"] | {"max_pages": 10_000, "max_depth": 50, "download_timeout": 10}
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with serve(EndlessSlowSiteHandler) as origin:
        parent = subprocess.Popen([sys.executable, "-c", PARENT, f"{origin}/docs/page/0", json.dumps(crawl)], env=env)
        children: list[psutil.Process] = []
        try:
            wait_until(lambda: len(EndlessSlowSiteHandler.requested) >= 5, 60, "the crawl to start")
            children = psutil.Process(parent.pid).children(recursive=True)
            assert children, "the crawl runs in a child process"
            parent.send_signal(sig)
            parent.wait(timeout=30)
            gone, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, f"still running after the parent died: {[p.pid for p in alive]}"
            served = len(EndlessSlowSiteHandler.requested)
            time.sleep(1.5)  # several response delays: a live crawler would have asked again
            assert len(EndlessSlowSiteHandler.requested) == served
        finally:  # whatever happened, nothing this test started outlives it
            for process in children:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            parent.kill()
            parent.wait()
