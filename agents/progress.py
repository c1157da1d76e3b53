"""Progress of long commands: episodes done of total, rate and time left, on stderr.

:class:`TaskProgress` follows a list of tasks (a worker's unit of work) whose episode counts are
known. On a terminal it draws a rich progress bar; elsewhere (a log file, CI, a pipe) it prints
one line per finished task with the count done of total; with ``quiet`` it prints nothing.
``esper-bench`` and the study runner report through it, for local workers and Ray alike
(:func:`agents.workers.run_tasks` and :func:`agents.workers.run_on_ray` call it as each task
finishes).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["TaskProgress"]


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TaskProgress:
    """Reports tasks of ``episodes[i]`` episodes each as they finish (see the module docstring).

    Args:
        episodes: the episode count of each task, in task order.
        label: what is running (the start of each line and the bar's description).
        quiet: print nothing.
        stream: where to write (default ``sys.stderr``).
        bar: draw the rich bar (default: when ``stream`` is a terminal).
        unit: what ``episodes`` counts (``"episodes"``; the speed benchmarks count ``"rounds"``,
            one per task, and then name them once).

    Use it as a context manager and call :meth:`done` with a task's index when it finishes.
    """

    def __init__(self, episodes: Sequence[int], label: str, quiet: bool = False,
                 stream: TextIO | None = None, bar: bool | None = None,
                 unit: str = "episodes") -> None:
        self.episodes = [int(n) for n in episodes]
        self.unit = unit
        self.total = sum(self.episodes)
        self.label, self.quiet = label, bool(quiet)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.bar = (bool(isatty()) if callable(isatty) else False) if bar is None else bool(bar)
        self.tasks_done = 0
        self.episodes_done = 0
        self._seen: set[int] = set()
        self._t0 = time.perf_counter()
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> TaskProgress:
        self._t0 = time.perf_counter()
        if self.bar and not self.quiet:
            self._start_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def _start_bar(self) -> None:
        state = random.getstate()  # importing rich draws from Python's global RNG
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.text import Text
        finally:
            random.setstate(state)

        unit = self.unit

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Any:  # noqa: D102
                speed = task.finished_speed or task.speed
                return Text(f"– {unit}/s" if not speed else f"{speed:.1f} {unit}/s")

        self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn(self.unit), Rate(), TimeElapsedColumn(),
                              TextColumn("left"), TimeRemainingColumn(),
                              console=Console(file=self.stream, force_terminal=True))
        self._task = self._rich.add_task(self.label, total=self.total)
        self._rich.start()

    def done(self, index: int) -> None:
        """Task ``index`` has finished (a second call for the same task is ignored)."""
        if index in self._seen:
            return
        self._seen.add(index)
        self.tasks_done += 1
        self.episodes_done += self.episodes[index]
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.episodes_done)
            return
        elapsed = time.perf_counter() - self._t0
        rate = self.episodes_done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.episodes_done) / rate if rate > 0 else 0.0
        tasks = "" if self.unit != "episodes" and self.total == len(self.episodes) else \
            f"{self.tasks_done}/{len(self.episodes)} tasks, "
        print(f"{self.label}: {tasks}"
              f"{self.episodes_done}/{self.total} {self.unit}, {rate:.2f} {self.unit}/s, "
              f"{_eta(elapsed)} elapsed, ~{_eta(left)} left", file=self.stream, flush=True)
