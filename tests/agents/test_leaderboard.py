"""The leaderboard: entries written by esper-bench, accepted only if their episodes reproduce."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from conftest import TINY_CLI

from agents import leaderboard as lb
from agents.bench import main

TINY = lb.Protocol("tiny", "synthetic, seeds 1000-1002", (*TINY_CLI, "--seeds", "3",
                                                          "--reward-modes", "contribution"),
                   "anything on other seeds")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A leaderboard of three baselines under the tiny protocol, written by esper-bench."""
    saved = dict(lb.PROTOCOLS)
    lb.PROTOCOLS["tiny"] = TINY
    out = tmp_path_factory.mktemp("board")
    try:
        assert main([*TINY.bench_args, "--policies", "no-growth,heuristic,scripted-norm",
                     "--no-plots", "--quiet", "--out", str(out / "bench"),
                     "--leaderboard-out", str(out / "lb")]) == 0
        yield out / "lb"
    finally:
        lb.PROTOCOLS.clear()
        lb.PROTOCOLS.update(saved)


@pytest.fixture
def tiny_protocol():
    saved = dict(lb.PROTOCOLS)
    lb.PROTOCOLS["tiny"] = TINY
    yield
    lb.PROTOCOLS.clear()
    lb.PROTOCOLS.update(saved)


def _copy(board, tmp_path, name="heuristic"):
    folder = tmp_path / "tiny"
    shutil.copytree(board / "tiny", folder)
    return folder / f"{name}.json"


def test_esper_bench_writes_one_entry_per_policy_with_its_episode_records(board, tiny_protocol):
    names = sorted(p.stem for p in (board / "tiny").glob("*.json"))
    assert names == ["heuristic", "no-growth", "scripted-norm"]
    entry = lb.load_entry(board / "tiny" / "heuristic.json")
    assert entry["protocol"] == "tiny" and entry["policy"] == {"baseline": "heuristic"}
    assert entry["command"].startswith("esper-bench ") and "--leaderboard-out" in entry["command"]
    records = lb.read_records(board / "tiny" / entry["records"])
    assert [lb.case_of(r) for r in records] == [[1000, None], [1001, None], [1002, None]]
    assert entry["row"] == lb.row_from_records(records)


def test_an_entry_that_reproduces_is_verified_or_replay_verified(board, tiny_protocol):
    path = board / "tiny" / "heuristic.json"
    assert lb.validate_entry(path).status == "replay-verified"
    v = lb.validate_entry(path, run_policy=True)
    assert v.status == "verified" and v.ok, v.messages


def test_an_entry_whose_row_was_edited_fails(board, tmp_path, tiny_protocol):
    path = _copy(board, tmp_path)
    entry = json.loads(path.read_text())
    entry["row"]["final_test_acc"]["mean"] += 5.0
    path.write_text(json.dumps(entry))
    v = lb.validate_entry(path)
    assert v.status == "failed" and "row is not what its episodes give" in v.messages[0]


def test_an_entry_whose_episodes_do_not_reproduce_fails(board, tmp_path, tiny_protocol):
    path = _copy(board, tmp_path)
    entry = json.loads(path.read_text())
    records = lb.read_records(path.parent / entry["records"])
    records[0]["rewards"][1] += 0.5  # an episode that did not happen, its row recomputed to match
    lb.write_records(path.parent / entry["records"], records)
    entry["row"] = lb.row_from_records(records)
    path.write_text(json.dumps(entry))
    v = lb.validate_entry(path)
    assert v.status == "failed" and "episode 0 (seed 1000) does not reproduce: step 2" in v.messages[0]
    assert main(["--validate-entry", str(path)]) == 1


def test_an_entry_with_other_cases_or_actions_fails(board, tmp_path, tiny_protocol):
    path = _copy(board, tmp_path)
    entry = json.loads(path.read_text())
    records = lb.read_records(path.parent / entry["records"])
    lb.write_records(path.parent / entry["records"], records[:2])
    entry["row"] = lb.row_from_records(records[:2])
    path.write_text(json.dumps(entry))
    v = lb.validate_entry(path)
    assert v.status == "failed" and "not the tiny protocol's 3 cases" in v.messages[0]
    # the right episodes, claimed for another policy: they replay, but the policy plays otherwise
    other = _copy(board, tmp_path / "b", "scripted-norm")
    entry = json.loads(other.read_text())
    entry["policy"] = {"baseline": "no-growth"}
    other.write_text(json.dumps(entry))
    assert lb.validate_entry(other).status == "replay-verified"
    v = lb.validate_entry(other, run_policy=True)
    assert v.status == "failed" and "the policy plays WAIT at step" in v.messages[0]


def test_an_entry_of_another_episode_version_is_stale(board, tmp_path, tiny_protocol):
    path = _copy(board, tmp_path)
    entry = json.loads(path.read_text())
    entry["episode_version"] += 1
    path.write_text(json.dumps(entry))
    v = lb.validate_entry(path)
    assert v.status == "stale" and v.ok
    assert main(["--validate-entry", str(path)]) == 0
    assert f"{entry['episode_version']} (stale)" in lb.render(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.pop("row"), "the entry has no 'row'"),
    (lambda e: e.__setitem__("protocol", "mnist"), "protocol='mnist' is invalid"),
    (lambda e: e.__setitem__("policy", {"pickle": "x"}), "policy={'pickle': 'x'} is invalid"),
    (lambda e: e.__setitem__("format", 9), "entry format 9 is not supported"),
    (lambda e: e.__setitem__("episode_version", "1"), "episode_version='1' is invalid"),
])
def test_a_malformed_entry_is_refused_by_name(board, tmp_path, tiny_protocol, change, message,
                                              capsys):
    path = _copy(board, tmp_path)
    entry = json.loads(path.read_text())
    change(entry)
    path.write_text(json.dumps(entry))
    with pytest.raises(lb.EntryError, match=message.replace("(", r"\(").replace("[", r"\[")):
        lb.load_entry(path)
    assert main(["--validate-entry", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_entries_are_json_and_gzipped_json_lines_only(board):
    for path in (board / "tiny").iterdir():
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.name.endswith(".jsonl.gz")
            with gzip.open(path, "rt") as f:
                assert all(json.loads(line) for line in f)


def test_the_options_must_be_a_protocols(tmp_path, capsys):
    assert main([*TINY_CLI, "--seeds", "2", "--leaderboard-out", str(tmp_path)]) == 2
    assert "--leaderboard-out needs a protocol's cases and env" in capsys.readouterr().err


def test_render_ranks_entries_with_their_paired_gain(board, tiny_protocol):
    text = lb.render(board.parent / "lb")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "rank" not in line]
    accs = [float(r.split(" | ")[3].split()[0]) for r in rows]
    assert accs == sorted(accs, reverse=True) and len(rows) == 3
    no_growth = next(r for r in rows if "| no-growth |" in r)
    assert no_growth.split(" | ")[4] == "—"
    assert all(r.split(" | ")[4].startswith(("+", "-")) for r in rows if r is not no_growth)


def test_the_docs_page_shows_the_committed_leaderboard():
    page = (lb.ROOT.parent / "docs" / "leaderboard.md").read_text()
    assert f"{lb.START}\n{lb.render()}{lb.END}" in page


def _committed(slow: bool):
    paths = sorted(lb.ROOT.glob("*/*.json"))
    fast = [p for p in paths if p.parent.name == "digits" and p.stem in ("no-growth", "heuristic")]
    return [p for p in paths if p not in fast] if slow else fast


@pytest.mark.parametrize("path", _committed(slow=False), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_entries_reproduce(path):
    v = lb.validate_entry(path, run_policy=True)
    assert v.status == "verified", v.messages


@pytest.mark.slow
@pytest.mark.parametrize("path", _committed(slow=True), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_committed_entry_reproduces(path):
    v = lb.validate_entry(path, run_policy=True)
    assert v.status == "verified", v.messages
