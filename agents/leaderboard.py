"""The Esper-v0 leaderboard: one JSON file per entry, accepted only if its episodes reproduce.

An entry (``leaderboard/<protocol>/<name>.json``, format :data:`ENTRY_FORMAT`) names the policy,
its authors, a link to its code, the protocol it was evaluated under (:data:`PROTOCOLS`), the
exact ``esper-bench`` command, the episode version, its table row and the file of its episode
records (JSON lines of :class:`esper_env.records.RecordEpisodes`, gzipped, beside the entry). It
may say how to re-run the policy: a baseline's name, or an ``esper-train`` run folder (relative
to the entry file) holding the model.

:func:`validate_entry` (``esper-bench --validate-entry FILE``) checks that the records are exactly
the protocol's cases, replays every record (:func:`esper_env.records.replay`: exact on the
recording CPU and torch build, within the records' tolerance elsewhere), recomputes the row from
the replayed episodes and compares it with the entry's. With ``run_policy=True`` (``--run-model``)
it also plays the entry's policy on the protocol's cases and compares its actions with the
recorded ones: the entry is then ``verified``; otherwise ``replay-verified``. Entries are JSON and
JSON lines: nothing is unpickled unless the reader asks for the policy to be run. An entry of
another episode version is ``stale`` until it is re-evaluated.

:func:`render` writes the table the docs show (``docs/leaderboard.md``): per protocol, the entries
by test accuracy, each with its paired gain over the no-growth entry on the same cases.
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.stats import bootstrap_ci

ENTRY_FORMAT = 1
"""Version of the entry layout (``format`` in every entry)."""

ROOT = Path(__file__).resolve().parent.parent / "leaderboard"
"""The committed leaderboard."""


@dataclass(frozen=True)
class Protocol:
    """A fixed evaluation: the ``esper-bench`` options that define its cases and env.

    ``tuning``: what may be tuned on which split or seeds (the docs' protocol page says it).
    """

    name: str
    title: str
    bench_args: tuple[str, ...]
    tuning: str

    def env_args(self) -> list[str]:
        """The protocol's env options (what the entry's env must be)."""
        return list(self.bench_args)


PROTOCOLS: dict[str, Protocol] = {
    "digits": Protocol(
        "digits", "digits, held-out seeds 1000-1019",
        ("--seeds", "20", "--first-seed", "1000", "--reward-modes", "contribution"),
        "anything on seeds < 1000; seeds 1000-1019 only for this evaluation"),
    "digits-mix": Protocol(
        "digits-mix", "digits-mix test split, 36 instances x seeds 1000+ (5 each)",
        ("--instance-set", "digits-mix", "--split", "test", "--seeds", "5", "--first-seed", "1000",
         "--reward-modes", "contribution"),
        "anything on the 60 training instances (any seeds); the 36 test instances only for this "
        "evaluation"),
}
"""The protocols, by name."""


class EntryError(ValueError):
    """An entry that cannot be read: a missing key, a wrong type, an unknown protocol."""


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": int, "name": str, "authors": str, "code": str, "protocol": str, "command": str,
    "episode_version": int, "records": str, "row": dict,
}
"""Every entry's keys and their JSON types (``policy`` is optional)."""


def load_entry(path: str | Path) -> dict[str, Any]:
    """Read and check an entry (JSON only)."""
    path = Path(path)
    try:
        entry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EntryError(f"{path}: cannot read the entry ({exc})") from exc
    if not isinstance(entry, dict):
        raise EntryError(f"{path}: an entry is a JSON object, got {type(entry).__name__}")
    for key, kind in REQUIRED.items():
        if key not in entry:
            raise EntryError(f"{path}: the entry has no {key!r}; required: {sorted(REQUIRED)}")
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            raise EntryError(f"{path}: {key}={entry[key]!r} is invalid; allowed: a JSON "
                             f"{getattr(kind, '__name__', kind)}")
    if entry["format"] != ENTRY_FORMAT:
        raise EntryError(f"{path}: entry format {entry['format']} is not supported; allowed: "
                         f"{ENTRY_FORMAT}")
    if entry["protocol"] not in PROTOCOLS:
        raise EntryError(f"{path}: protocol={entry['protocol']!r} is invalid; allowed: "
                         f"{sorted(PROTOCOLS)}")
    policy = entry.get("policy")
    if policy is not None and not (isinstance(policy, dict) and (
            isinstance(policy.get("baseline"), str) or isinstance(policy.get("model"), str))):
        raise EntryError(f"{path}: policy={policy!r} is invalid; allowed: null, "
                         "{'baseline': NAME} or {'model': RUN_FOLDER relative to the entry}")
    return entry


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The episode records of an entry (JSON lines, gzipped when the name ends in ``.gz``)."""
    from esper_env.records import REQUIRED_KEYS

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:  # type: ignore[operator]
        records = [json.loads(line) for line in f if line.strip()]
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise EntryError(f"{path}: record {i} lacks {missing}")
    return records


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write episode records as gzipped JSON lines (no time stamp: the bytes depend on the data)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for r in records:
            f.write((json.dumps(r, allow_nan=True) + "\n").encode())


def case_of(record: dict[str, Any]) -> list[Any]:
    """``[seed, instance name]`` of a record (instance None without an instance set)."""
    instance = record.get("instance")
    return [record["seed"], None if instance is None else instance["name"]]


def row_from_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """An entry's table row, recomputed from its records: test accuracy (mean, 95 % bootstrap
    interval), return, parameters added, and its cases with their test accuracies (for pairing).
    """  # noqa: D205
    acc = [float(r["final"]["final_test_acc"]) for r in records]
    ret = [float(sum(r["rewards"])) for r in records]
    params = [float(r["final"].get("params_added", 0)) for r in records]

    def ci(x: list[float]) -> dict[str, float]:
        return dict(zip(("mean", "lo", "hi"), bootstrap_ci(x), strict=True))

    return {"episodes": len(records), "final_test_acc": ci(acc), "episode_return": ci(ret),
            "params_added": float(np.mean(params)),
            "cases": [[*case_of(r), a] for r, a in zip(records, acc, strict=True)]}


def protocol_cases(protocol: Protocol) -> list[list[Any]]:
    """The protocol's ``[seed, instance name]`` cases, in order."""
    from agents.cli import env_kwargs_from
    from agents.envs import EnvSpec
    from agents.rollout import episode_plan, instance_name

    args = _parser().parse_args(protocol.env_args())
    spec = EnvSpec.from_kwargs(**env_kwargs_from(args))
    if spec.esper_config.task.instance_set is not None:
        spec = spec.replace_config(instance_split=args.split)
    env = spec.make()
    try:
        plan = episode_plan(env, args.first_seed, args.seeds or 20, per_instance=args.seeds or 3)
        return [[seed, instance_name(env, options)] for seed, options in plan]
    finally:
        env.close()


def _parser() -> Any:
    """The esper-bench options a protocol fixes (its cases and env)."""
    import argparse

    from agents.cli import add_env_arguments

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--first-seed", type=int, default=1000)
    p.add_argument("--split", default="test")
    p.add_argument("--reward-modes", default="contribution")
    add_env_arguments(p)
    return p


@dataclass
class Validation:
    """What :func:`validate_entry` found: ``status`` and why."""

    status: str
    messages: list[str] = field(default_factory=list)
    row: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True unless the entry failed (a stale entry is not wrong, only old)."""
        return self.status != "failed"


def validate_entry(path: str | Path, run_policy: bool = False, tolerance: float | None = None,
                   ) -> Validation:
    """Replay an entry's episodes and recompute its row (see the module docstring)."""
    from esper_env.core.episode import EPISODE_VERSION
    from esper_env.records import RecordVersionError, replay

    path = Path(path)
    entry = load_entry(path)
    records = read_records(path.parent / entry["records"])
    if entry["episode_version"] != EPISODE_VERSION or any(
            r.get("episode_version", 1) != entry["episode_version"] for r in records):
        return Validation("stale", [f"episode version {entry['episode_version']}; this esper_env "
                                    f"runs {EPISODE_VERSION}: re-evaluate the policy"])
    want = protocol_cases(PROTOCOLS[entry["protocol"]])
    got = [case_of(r) for r in records]
    if got != want:
        extra = [c for c in got if c not in want]
        missing = [c for c in want if c not in got]
        return Validation("failed", [f"the records are not the {entry['protocol']} protocol's "
                                     f"{len(want)} cases, once each, in order ({len(got)} records; "
                                     f"missing {missing[:3]}, extra {extra[:3]})"])
    row = row_from_records(records)  # cheap first: a row edited by hand fails before any replay
    if not _same_row(row, entry["row"]):
        return Validation("failed", ["the entry's row is not what its episodes give: "
                                     f"recorded {_brief(entry['row'])}, recomputed {_brief(row)}"],
                          row)
    messages = []
    for i, record in enumerate(records):
        try:
            report = replay(record, tolerance)
        except RecordVersionError as exc:  # pragma: no cover - caught as stale above
            return Validation("stale", [str(exc)])
        if not report.ok:
            return Validation("failed", [f"episode {i} (seed {record['seed']}) does not reproduce: "
                                         f"{report.first_difference}"], row)
        if not report.exact:
            messages.append(f"episode {i} replayed within {report.tolerance:g}")
    if not run_policy or entry.get("policy") is None:
        why = "no policy to run" if entry.get("policy") is None else "the policy was not run"
        return Validation("replay-verified", [*messages, f"{len(records)} episodes replayed; {why}"],
                          row)
    differ = _rerun(path, entry, records)
    if differ:
        return Validation("failed", [differ], row)
    return Validation("verified", [*messages, f"{len(records)} episodes replayed and the policy's "
                                              "actions re-played identically"], row)


def _same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _brief(row: dict[str, Any]) -> str:
    acc = row.get("final_test_acc", {})
    return f"{row.get('episodes')} episodes, test acc {acc.get('mean')}"


def _rerun(path: Path, entry: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    """Play the entry's policy on the protocol's cases; the first action that differs, or None."""
    from agents.envs import EnvSpec
    from agents.policies import make_baseline
    from agents.runs import load_model
    from esper_env.config import EsperConfig

    policy = entry["policy"]
    config = EsperConfig.from_dict(records[0]["config"])
    plan = [(r["seed"], r["options"]) for r in records]
    if "model" in policy:
        run = (path.parent / policy["model"]).resolve()
        _, spec = load_model(run)
        spec = EnvSpec(config.to_dict(), spec.mask_observation, spec.curriculum, spec.env_id)
        task = {"policy": entry["name"], "model": str(run), "sequential": False}
    else:
        spec = EnvSpec(config.to_dict())
        probe = spec.make()
        try:
            learns = bool(getattr(make_baseline(policy["baseline"], probe),
                                  "learns_across_episodes", False))
        finally:
            probe.close()
        task = {"policy": policy["baseline"], "model": None, "sequential": learns}
    played = _play(task, spec, plan, int(records[0]["torch_threads"]))
    for i, (rec, ep) in enumerate(zip(records, played, strict=True)):
        names = _action_names(rec)
        if ep["actions"] != names:
            t = next(t for t, (a, b) in enumerate(zip(ep["actions"], names, strict=False)) if a != b)
            return (f"episode {i} (seed {rec['seed']}): the policy plays {ep['actions'][t]} at step "
                    f"{t + 1}, the record {names[t]}")
    return None


def _play(task: dict[str, Any], spec: Any, plan: list[Any], threads: int) -> list[dict[str, Any]]:
    """Play ``plan`` with the task's policy as esper-bench does; each episode's action names."""
    import torch

    from agents.policies import make_baseline
    from agents.rollout import EpisodeTrace, run_episode, takes_masks
    from agents.runs import load_curriculum, load_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    curriculum = policy = None
    if task["model"] is not None:
        policy, _ = load_model(task["model"], which="best")
        curriculum = load_curriculum(task["model"], "best")
    env = spec.make(curriculum=curriculum)
    out = []
    try:
        if task["model"] is None and task["sequential"]:
            policy = make_baseline(task["policy"], env, seed=plan[0][0])
        for seed, options in plan:
            if task["model"] is None and not task["sequential"]:
                policy = make_baseline(task["policy"], env, seed=seed)
            trace = EpisodeTrace()
            run_episode(env, policy, seed, options=options, use_masks=takes_masks(policy),
                        trace=trace)
            out.append({"actions": trace.actions})
    finally:
        env.close()
        torch.set_num_threads(before)
    return out


def _action_names(record: dict[str, Any]) -> list[str]:
    from esper_env.config import EsperConfig
    from esper_env.core.actions import ActionCodec
    from esper_env.core.catalog import BLUEPRINT_NAMES
    from esper_env.nn.blueprints import available_blueprints
    from esper_env.tasks import get_task

    cfg = EsperConfig.from_dict(record["config"])
    topology = get_task(cfg.task.name).spec.topology
    blueprints = available_blueprints(topology) if topology in BLUEPRINT_NAMES else ()
    codec = ActionCodec(cfg.host.n_slots, tuple(blueprints))
    return [codec.name(a) for a in record["actions"]]


# ---- writing entries (esper-bench --leaderboard-out) ---------------------------------------------

def matching_protocol(args: Any, spec: Any) -> Protocol:
    """The protocol whose cases and env ``esper-bench``'s options give (ValueError if none)."""
    from agents.cli import env_kwargs_from
    from agents.envs import EnvSpec

    for protocol in PROTOCOLS.values():
        theirs = _parser().parse_args(protocol.env_args())
        ref = EnvSpec.from_kwargs(**env_kwargs_from(theirs), report_test_acc=True)
        if ref.esper_config.task.instance_set is not None:
            ref = ref.replace_config(instance_split=theirs.split)
        same = (ref.esper_config == spec.esper_config
                and (args.seeds, args.first_seed, args.split) == (theirs.seeds, theirs.first_seed,
                                                                  theirs.split)
                and args.reward_modes.split(",")[0] == "contribution")
        if same:
            return protocol
    raise ValueError("--leaderboard-out needs a protocol's cases and env; allowed: esper-bench "
                     + " or ".join(" ".join(p.bench_args) for p in PROTOCOLS.values())
                     + " (plus --policies, --model, --workers)")


def write_entry(out: Path, protocol: Protocol, name: str, records: list[dict[str, Any]],
                command: str, authors: str, code: str, policy: dict[str, str] | None) -> Path:
    """Write ``out/<protocol>/<name>.json`` and its records; returns the entry's path."""
    from esper_env.core.episode import EPISODE_VERSION

    folder = out / protocol.name
    folder.mkdir(parents=True, exist_ok=True)
    records_name = f"{name}.jsonl.gz"
    write_records(folder / records_name, records)
    if policy is not None and "model" in policy:  # relative to the entry, so the folder can move
        policy = {"model": str(Path(_relpath(Path(policy["model"]).resolve(), folder.resolve())))}
    entry = {"format": ENTRY_FORMAT, "name": name, "authors": authors, "code": code,
             "protocol": protocol.name, "command": command, "episode_version": EPISODE_VERSION,
             "records": records_name, "policy": policy, "row": row_from_records(records)}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)


# ---- the table ----------------------------------------------------------------------------------

def entries(root: str | Path = ROOT) -> list[tuple[Path, dict[str, Any]]]:
    """Every entry under ``root``, by protocol then name."""
    return [(p, load_entry(p)) for p in sorted(Path(root).glob("*/*.json"))]


def render(root: str | Path = ROOT) -> str:
    """The leaderboard as Markdown: per protocol, entries by mean test accuracy, with the paired
    gain over the no-growth entry on the same cases and whether the entry is current.
    """  # noqa: D205
    from esper_env.core.episode import EPISODE_VERSION

    found = entries(root)
    parts = []
    for name, protocol in PROTOCOLS.items():
        mine = [(p, e) for p, e in found if e["protocol"] == name]
        if not mine:
            continue
        base = next((e for _, e in mine if e.get("policy") == {"baseline": "no-growth"}), None)
        ref = {tuple(c[:2]): c[2] for c in base["row"]["cases"]} if base else {}
        lines = [f"### {protocol.title}", "",
                 "| rank | entry | authors | test acc % | − no-growth (pp) | +params | re-run | "
                 "episode version |", "|---|---|---|---|---|---|---|---|"]
        mine.sort(key=lambda pe: -pe[1]["row"]["final_test_acc"]["mean"])
        for rank, (_, e) in enumerate(mine, start=1):
            acc = e["row"]["final_test_acc"]
            gain = "—"
            if ref and e is not base:
                d = [c[2] - ref[tuple(c[:2])] for c in e["row"]["cases"] if tuple(c[:2]) in ref]
                m, lo, hi = bootstrap_ci(d)
                gain = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            policy = e.get("policy") or {}
            rerun = ("baseline" if "baseline" in policy else "model" if "model" in policy
                     else "records only")
            version = (f"{e['episode_version']} (stale)" if e["episode_version"] != EPISODE_VERSION
                       else f"{e['episode_version']} (current)")
            link = f"[{e['name']}]({e['code']})" if e["code"].startswith("http") else e["name"]
            lines.append(f"| {rank} | {link} | {e['authors']} | {acc['mean']:.2f} "
                         f"[{acc['lo']:.2f}, {acc['hi']:.2f}] | {gain} | "
                         f"{e['row']['params_added']:.0f} | {rerun} | {version} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
"""The markers of the rendered table in ``docs/leaderboard.md``."""


def update_page(page: str | Path, root: str | Path = ROOT) -> bool:
    """Write :func:`render` between the markers of ``page``; True if it changed."""
    page = Path(page)
    text = page.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    new = f"{head}{START}\n{render(root)}{END}{tail}"
    if new != text:
        page.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.leaderboard render``: update docs/leaderboard.md from leaderboard/."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["render"]:
        print("usage: python -m agents.leaderboard render", file=sys.stderr)
        return 2
    page = ROOT.parent / "docs" / "leaderboard.md"
    print(f"{page}: {'updated' if update_page(page) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
