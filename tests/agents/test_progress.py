"""TaskProgress: a bar on a terminal, one line per finished task elsewhere, nothing when quiet."""

from __future__ import annotations

import io
import random

from agents.progress import TaskProgress


def test_off_a_terminal_each_finished_task_is_one_line_with_counts_done_of_total() -> None:
    stream = io.StringIO()
    with TaskProgress([3, 5, 2], "play", stream=stream) as p:
        for i in (1, 0, 0, 2):  # the order tasks finish in; a repeated report is ignored
            p.done(i)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and p.tasks_done == 3 and p.episodes_done == 10
    assert lines[0].startswith("play: 1/3 tasks, 5/10 episodes, ")
    assert lines[1].startswith("play: 2/3 tasks, 8/10 episodes, ")
    assert lines[2].startswith("play: 3/3 tasks, 10/10 episodes, ") and "~0:00 left" in lines[2]
    assert all("episodes/s" in line and "elapsed" in line for line in lines)


def test_quiet_prints_nothing_and_still_counts() -> None:
    stream = io.StringIO()
    with TaskProgress([1, 1], "play", quiet=True, stream=stream, bar=True) as p:
        p.done(0)
        p.done(1)
    assert stream.getvalue() == "" and p.episodes_done == 2


def test_on_a_terminal_it_draws_a_bar_and_leaves_the_global_rng_alone() -> None:
    stream = io.StringIO()
    random.seed(7)
    expected = random.Random(7).random()
    with TaskProgress([4, 4], "esper-bench", stream=stream, bar=True) as p:
        p.done(0)
        p.done(1)
    assert random.random() == expected  # importing rich did not draw from it
    text = stream.getvalue()
    assert "esper-bench" in text and "8/8" in text and "episodes/s" in text
    assert "tasks," not in text  # the bar, not the lines


def test_the_bar_is_the_default_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert TaskProgress([1], "x", stream=Tty()).bar
    assert not TaskProgress([1], "x", stream=io.StringIO()).bar
