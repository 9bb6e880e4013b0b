"""A crawl child process that dies with its parent, and a parent that stops its child when told to.

Killing ``kedro run`` (SIGTERM, SIGKILL, Ctrl-C) must stop the Scrapy child at once: a crawler
that keeps requesting pages from a live site after its user stopped it is impolite. Two
mechanisms, because either alone has gaps:

- in the child, :func:`die_with_parent` asks Linux to SIGKILL it when the parent dies
  (``prctl(PR_SET_PDEATHSIG)``), and starts a watchdog thread that notices a changed parent
  pid (every other POSIX system, and the race before ``prctl`` took effect);
- in the parent, :func:`stop_child` ends the child when the parent is interrupted or
  receives SIGTERM while it waits (:func:`forward_termination`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 0.5


def _set_parent_death_signal(sig: int) -> bool:
    """Linux only: have the kernel send ``sig`` to this process when its parent thread exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_now() -> None:
    """End this process at once: nothing the crawl would still do is wanted by anyone."""
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a child: SIGKILL on parent death, plus a watchdog on the parent pid."""
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _exit_now()

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                _exit_now()
            time.sleep(WATCHDOG_INTERVAL_S)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def stop_child(child: BaseProcess, grace_s: float = 5.0) -> None:
    """Terminate a child process (SIGTERM), then kill it if it is still there after ``grace_s``."""
    if not child.is_alive():
        return
    logger.warning("Stopping the crawl child process %s", child.pid)
    child.terminate()
    child.join(grace_s)
    if child.is_alive():
        child.kill()
        child.join()


@contextlib.contextmanager
def forward_termination(child: BaseProcess) -> Iterator[None]:
    """While waiting for ``child``: SIGTERM/SIGINT of this process (or any error) stops the child too.

    SIGTERM is turned into SystemExit here (the default action would end this process
    without running ``finally`` blocks); handlers can only be set from the main thread, so
    other threads rely on the child's own parent-death signal and watchdog.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigterm(signum, frame):
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        stop_child(child)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
