"""Find every process a test started, however it was started, by a tag in its environment.

A command run with :func:`tagged_env` passes ``ESPER_TEST_TAG=<uuid>`` to everything it starts
(multiprocessing workers of any start method, forkservers, resource trackers, subprocesses), and
``/proc/<pid>/environ`` still shows it after the process's parent has died and it has been
re-parented. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

TAG = "ESPER_TEST_TAG"


def new_tag() -> str:
    """A fresh unique tag."""
    return uuid.uuid4().hex


def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    """This process's environment plus ``ESPER_TEST_TAG=tag``, the repository on PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root, TAG: tag, **extra}


def tagged(tag: str) -> dict[int, str]:
    """Live processes (not zombies) whose environment carries ``tag``: pid -> command line."""
    want = f"{TAG}={tag}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if want not in Path(entry.path, "environ").read_bytes().split(b"\0"):
                continue
            if Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        found[int(entry.name)] = cmd.strip()
    return found


def wait_until_gone(tag: str, timeout_s: float) -> dict[int, str]:
    """Wait up to ``timeout_s`` for every tagged process to end; the ones still running."""
    deadline = time.monotonic() + timeout_s
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for(tag: str, predicate, timeout_s: float) -> dict[int, str]:
    """Wait up to ``timeout_s`` until ``predicate(tagged(tag))`` holds; the tagged processes then.

    Raises AssertionError (with what was seen) when it never does.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate(procs := tagged(tag)):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s} s waiting for processes; saw {procs}")
        time.sleep(0.05)
    return procs


def kill_tagged(tag: str, grace_s: float = 2.0) -> None:
    """SIGKILL every tagged process (for a test's ``finally``).

    Resource trackers go last, after ``grace_s`` to end by themselves once the processes holding
    them are gone: a killed tracker cannot unlink the semaphores it tracks.
    """
    def trackers(cmd: str) -> bool:
        return "resource_tracker" in cmd

    for pid, cmd in tagged(tag).items():
        if not trackers(cmd):
            _kill(pid)
    deadline = time.monotonic() + grace_s
    while any(trackers(c) for c in tagged(tag).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in tagged(tag):
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
