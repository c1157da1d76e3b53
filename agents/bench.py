"""esper-bench: the policy benchmark — every policy on the same seeded episodes, with honest statistics.

Policies: the baselines (no-growth, random, heuristic, ucb-heuristic: the heuristic with a UCB1
blueprint curriculum), every fixed single-blueprint scripted policy, the static references
(``static-<blueprint>``: the host with that seed built in at slot 0 from the start, fully blended,
trained on the same batches; "built big from the start") and any saved ``esper-train`` runs
(``--model``). Episodes: ``--seeds`` seeds from ``--first-seed``
(held out: 1000+) on a task, or every instance of an instance split × ``--seeds`` seeds; identical
for every policy. Each episode is played under every reward mode in ``--reward-modes`` (the reward
never changes what happens, so the modes differ only in the return); the table uses the first mode.

Per episode: return, final validation and test accuracy, parameters added, seeds fossilized and
culled, illegal actions, wall time, the validation and test accuracy curves and the lifecycle
timeline (stage per slot per epoch and the action taken). Per policy: mean and 95 % bootstrap interval of each
quantity, and paired differences (same episode) to no-growth, to the best fixed scripted policy and
to "built big": each episode against the static reference of its own final architecture on the
same case (no-growth where it ends with no fossil; architectures no ``static-*`` row covers are
played as extra static episodes). A static reference whose seed exceeds an instance's
``param_budget`` has no episode there (its row says over how many cases it ran).
Under the table, per reward mode: the Spearman correlation between the policies' mean return and mean
test accuracy (bootstrap interval over episodes) and the per-episode Spearman of the paired deltas
against no-growth. Output: a Markdown table (``table.md``), one JSON line per run with every episode
and provenance (``bench.jsonl``), and four pictures (:mod:`agents.plots`: the forest plot of every
policy's gain over no-growth, the gain curves of a handful of policies, gain against parameters
added, lifecycle timelines) with ``pictures.json`` naming what each shows. The handful is
``--curve-policies`` plus, with ``--select-on``, the best fixed script, trained agent and static
reference of another run (the training split, or other seeds), never chosen on the cases shown.
Local worker processes with one torch thread each (``--workers``,
:func:`agents.workers.run_tasks`), or Ray (``--ray``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import add_env_arguments, env_kwargs_from
from agents.envs import EnvSpec
from agents.policies import make_baseline
from agents.progress import TaskProgress
from agents.provenance import provenance
from agents.rollout import EpisodeTrace, episode_plan, instance_name, run_episode, takes_masks
from agents.runs import load_curriculum, load_model
from agents.stats import bootstrap_ci, bootstrap_spearman, spearman
from agents.workers import run_on_ray, run_tasks
from esper_env.config import REWARD_MODES
from esper_env.errors import ConfigError

STATIC = "static-"
"""Prefix of the static reference rows: ``static-<blueprint>`` is the host with that blueprint built
in at slot 0 from the start (``static_seeds``), playing WAIT."""

BUILT_BIG = "built-big"
"""Tag of the extra static episodes run only to pair an episode with its own final architecture."""

METRICS = ("episode_return", "final_test_acc", "final_val_acc", "params_added", "n_fossilized",
           "n_culled", "illegal_actions", "wall_s")
"""Per-episode quantities summarised per policy."""


# ---- episodes (worker processes) ---------------------------------------------------------------

def play(env: Any, policy: Any, seed: int, options: dict[str, Any] | None, masked: bool,
         info_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """One deterministic episode with its curves and lifecycle timeline (plain JSON types).

    With ``info_keys``, ``"info"`` holds those ``info`` values of every epoch (:class:`EpisodeTrace`).
    """
    trace = EpisodeTrace(info_keys=info_keys)
    r = run_episode(env, policy, seed, options=options, use_masks=masked, trace=trace)
    return _record(r, trace, seed)


def _record(r: Any, trace: EpisodeTrace, seed: int) -> dict[str, Any]:
    """An episode's record (plain JSON types) from its result and trace."""
    rec = {"seed": seed, "instance": r.instance, "val_curve": trace.val_curve,
           "test_curve": trace.test_curve, "stages": trace.stages, "actions": trace.actions,
           "episode_return": r.episode_return, "illegal_actions": r.illegal_actions,
           "n_culled": r.n_culled, "final_test_acc": r.final_test_acc,
           "final_val_acc": r.final_val_acc, "params_added": r.params_added,
           "n_fossilized": r.n_fossilized, "lifecycle": r.lifecycle, "rollbacks": r.rollbacks,
           "length": r.length, "wall_s": trace.wall_s, "fossils": [list(f) for f in r.fossils],
           "host_params": r.host_params}
    if trace.info_keys:
        rec["info"] = trace.info
    return rec


def batched_env(spec: EnvSpec, n_envs: int) -> Any:
    """The batched vector env that plays ``spec``'s episodes as a work queue (DISABLED
    autoreset); ConfigError for agent-side wrappers, which are per-env.
    """  # noqa: D205
    from esper_env.vector import EsperVectorEnv

    if spec.mask_observation or spec.curriculum is not None:
        raise ConfigError("vec_env='batched' cannot play an env with agent-side wrappers (the "
                          "mask in the observation, the blueprint curriculum) yet; allowed: "
                          "the plain env (--vec-env env plays these)")
    return EsperVectorEnv(n_envs, config=spec.esper_config, autoreset_mode="DISABLED")


def _run_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Worker: one policy under one reward mode over the planned episodes.

    A task names its policy (``policy``: a baseline name, or the label of the saved run ``model``),
    its env (``spec``, JSON), its episodes (``plan``), torch ``threads`` and whether the policy
    plays them all in order (``sequential``: one policy, seeded by the first episode's seed) or is
    made afresh for each (seeded by the episode's seed). Optional, for the benchmarks' studies:
    ``factory`` (a module-level ``factory(name, env, seed, options) -> policy`` used instead of
    :func:`agents.policies.make_baseline`), ``tags`` (added to every episode's record) and
    ``info_keys`` (see :func:`play`).
    """
    import torch

    torch.set_num_threads(task["threads"])
    spec = EnvSpec.from_json(task["spec"])
    make = task.get("factory")
    tags = task.get("tags") or {}
    info_keys = tuple(task.get("info_keys") or ())

    play_as = task.get("play_as") or task["policy"]  # a static reference plays no-growth (WAIT)

    def baseline(seed: int, options: dict[str, Any] | None) -> Any:
        if make is None:
            return make_baseline(play_as, env, seed=seed)
        return make(play_as, env, seed, options)

    curriculum = None
    if task["model"] is not None:
        policy, _ = load_model(task["model"], which="best")
        curriculum = load_curriculum(task["model"], "best")
    if task.get("batched"):  # the whole plan as one batched work queue
        from agents.rollout import run_queue

        venv = batched_env(spec, min(int(task["batched"]), len(task["plan"])))
        env = venv.template
        try:
            played = run_queue(venv, task["plan"], (lambda seed, options: policy) if task["model"]
                               else baseline, name=task["policy"], info_keys=info_keys)
        finally:
            venv.close()
        return [{"policy": task["policy"], "reward_mode": task["mode"], **tags,
                 **_record(r, trace, seed)}
                for (r, trace), (seed, _) in zip(played, task["plan"], strict=True)]
    env = spec.make(curriculum=curriculum, record=task.get("record"))
    out = []
    if task["model"] is None and task["sequential"]:  # one policy that learns across the episodes
        policy = baseline(*task["plan"][0])
    for seed, options in task["plan"]:
        if task["model"] is None and not task["sequential"]:  # a fresh baseline per episode, seeded
            policy = baseline(seed, options)  # by it: chunking changes nothing
        try:
            rec = play(env, policy, seed, options, takes_masks(policy), info_keys)
        except ConfigError as exc:  # static seeds over this instance's param_budget: no such case
            if not task.get("static") or "param_budget" not in str(exc):
                raise
            rec = {"seed": seed, "instance": instance_name(env, options), "over_budget": str(exc)}
            env.close()  # Gymnasium's passive checker cannot step after a refused first reset
            env = spec.make(curriculum=curriculum, record=task.get("record"))
        out.append({"policy": task["policy"], "reward_mode": task["mode"], **tags, **rec})
    env.close()
    return out


# ---- statistics --------------------------------------------------------------------------------

def _case(e: dict[str, Any]) -> tuple[int, str | None]:
    return e["seed"], e["instance"]


def is_static(e: dict[str, Any]) -> bool:
    """True for an episode of a static reference (a ``static-*`` row or a built-big pairing)."""
    return e["policy"].startswith(STATIC) or e.get("reference") == BUILT_BIG


def _architecture(e: dict[str, Any]) -> tuple[tuple[int, str], ...]:
    return tuple((int(k), str(b)) for k, b in e.get("fossils", ()))


def built_big_needs(episodes: list[dict[str, Any]], mode: str
                    ) -> dict[tuple[tuple[int, str], ...], list[tuple[int, str | None]]]:
    """The (architecture, case) pairs whose static reference no episode played yet: per grown
    architecture (its fossils, by slot), the cases to play it on.
    """  # noqa: D205
    rows = [e for e in episodes if e["reward_mode"] == mode and not e.get("over_budget")]
    have = {(_architecture(e), _case(e)) for e in rows if is_static(e)}
    needs: dict[tuple[tuple[int, str], ...], list[tuple[int, str | None]]] = {}
    for e in rows:
        arch = _architecture(e)
        if not is_static(e) and arch and (arch, _case(e)) not in have:
            needs.setdefault(arch, [])
            if _case(e) not in needs[arch]:
                needs[arch].append(_case(e))
    return needs


def _ci(values: list[float]) -> dict[str, float]:
    return dict(zip(("mean", "lo", "hi"), bootstrap_ci(values), strict=True))


def summarize(episodes: list[dict[str, Any]], mode: str,
              groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Per-policy bootstrap summaries and paired differences under ``mode``.

    Paired differences (same cases) to no-growth, the best fixed scripted policy and the
    heuristic; with no-growth and static references present, ``final_test_acc_minus_built_big``:
    each episode against the static reference of its own final architecture on its case
    (no-growth where it ends with no fossil). A static row covers the cases whose
    ``param_budget`` admits it. ``groups`` (label -> policies, e.g. the training seeds of one
    algorithm) adds a row per group whose every quantity is, per case, the mean over its members,
    so its intervals are over cases and its paired differences are those of the seed average.
    """
    rows = [e for e in episodes if e["reward_mode"] == mode]
    policies = list(dict.fromkeys(e["policy"] for e in rows if e.get("reference") != BUILT_BIG))
    usable = [e for e in rows if not e.get("over_budget")]
    by = {(e["policy"], _case(e)): e for e in usable}
    cases = list(dict.fromkeys(_case(e) for e in rows))
    statics = {(_architecture(e), _case(e)): e for e in usable if is_static(e)}

    def built_big(e: dict[str, Any]) -> float | None:
        """The test accuracy of ``e``'s static reference (its own architecture, its case)."""
        if "built_big_acc" in e:  # a group's mean
            return e["built_big_acc"]
        ref = statics.get((_architecture(e), _case(e))) if _architecture(e) else by.get(
            ("no-growth", _case(e)))
        return None if ref is None else ref["final_test_acc"]

    for label, members in (groups or {}).items():
        unknown = [m for m in members if m not in policies]
        if unknown or label in policies:
            raise ValueError(f"group {label}={','.join(members)} is invalid; allowed: a new label "
                             f"and policies of this run ({unknown or label!r} is not)")
        for c in cases:
            mine = [by[m, c] for m in members if (m, c) in by]
            if len(mine) < len(members):
                continue
            refs = [built_big(e) for e in mine]
            synth = {"policy": label, "seed": c[0], "instance": c[1], "reward_mode": mode,
                     "group": members, **{m: float(np.mean([e[m] for e in mine])) for m in METRICS}}
            if statics and all(r is not None for r in refs):
                synth["built_big_acc"] = float(np.mean(refs))  # type: ignore[arg-type]
            by[label, c] = synth
        policies.append(label)
    table: dict[str, Any] = {}
    for p in policies:
        mine = [c for c in cases if (p, c) in by]
        table[p] = {m: _ci([by[p, c][m] for c in mine]) for m in METRICS} if mine else {}
        table[p]["cases"] = len(mine)
        if p in (groups or {}):
            table[p]["group"] = groups[p]  # type: ignore[index]
    scripted = [p for p in policies if p.startswith("scripted-")]
    best_fixed = max(scripted, key=lambda p: table[p]["final_test_acc"]["mean"]) if scripted else None
    for ref_name, ref in (("no-growth", "no-growth"), ("best_fixed", best_fixed),
                          ("heuristic", "heuristic")):
        if ref not in table:
            continue
        for p in policies:
            shared = [c for c in cases if (p, c) in by and (ref, c) in by]
            if p == ref or not shared:
                continue
            for m in ("final_test_acc", "episode_return"):
                table[p][f"{m}_minus_{ref_name}"] = _ci([by[p, c][m] - by[ref, c][m] for c in shared])
    if "no-growth" in table and statics:
        for p in policies:
            if p == "no-growth" or p.startswith(STATIC):
                continue
            pairs = [(by[p, c]["final_test_acc"], built_big(by[p, c])) for c in cases if (p, c) in by]
            if pairs and all(r is not None for _, r in pairs):
                table[p]["final_test_acc_minus_built_big"] = _ci([a - r for a, r in pairs])  # type: ignore[operator]
    return {"mode": mode, "policies": table, "best_fixed": best_fixed, "cases": len(cases)}


def integrity(episodes: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Spearman(mean return, mean test acc) over policies with its interval, and the per-episode one
    (static references are not policies of the env's game: their return starts from a built model).
    """  # noqa: D205
    rows = [e for e in episodes if e["reward_mode"] == mode and not is_static(e)]
    policies = list(dict.fromkeys(e["policy"] for e in rows))
    by = {(e["policy"], _case(e)): e for e in rows}
    cases = [_case(e) for e in rows if e["policy"] == policies[0]]
    ret = np.array([[by[p, c]["episode_return"] for c in cases] for p in policies])
    acc = np.array([[by[p, c]["final_test_acc"] for c in cases] for p in policies])
    rho = spearman(list(ret.mean(1)), list(acc.mean(1)))
    lo, hi = bootstrap_spearman(ret, acc) if len(cases) > 1 else (float("nan"), float("nan"))
    out = {"mode": mode, "spearman": rho, "spearman_ci95": [lo, hi], "episode_spearman": float("nan")}
    if "no-growth" in policies:
        base = policies.index("no-growth")
        others = [i for i in range(len(policies)) if i != base]
        out["episode_spearman"] = spearman(list((ret[others] - ret[base]).ravel()),
                                           list((acc[others] - acc[base]).ravel()))
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The results table (Markdown): mean [95 % bootstrap interval] per quantity and policy.

    A static reference's return is "—" (it starts from a built model and pays no rent: not
    comparable); a row over fewer cases than the table says how many.
    """
    def cell(d: dict[str, float], digits: int = 2) -> str:
        return f"{d['mean']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"

    def paired(m: dict[str, Any], key: str) -> str:
        return cell(m[key]) if key in m else "—"

    best = summary["best_fixed"]  # None without scripted policies: no such column
    big = any("final_test_acc_minus_built_big" in m for m in summary["policies"].values())
    heur = "heuristic" in summary["policies"]
    head = ["policy", "return", "test acc %", "val acc %", "+params", "fossilized", "culled", "illegal",
            "test acc − no-growth (pp)", *([f"test acc − best fixed ({best}) (pp)"] if best else []),
            *(["test acc − heuristic (pp)"] if heur else []),
            *(["test acc − built big (pp)"] if big else []), "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, m in summary["policies"].items():
        name = p if m["cases"] == summary["cases"] else f"{p} ({m['cases']}/{summary['cases']} cases)"
        if not m["cases"]:  # a static reference that fits no case's param_budget
            lines.append("| " + " | ".join([name] + ["—"] * (len(head) - 1)) + " |")
            continue
        row = [name, "—" if p.startswith(STATIC) else cell(m["episode_return"]),
               cell(m["final_test_acc"]), cell(m["final_val_acc"]),
               cell(m["params_added"], 0), cell(m["n_fossilized"]), cell(m["n_culled"]),
               cell(m["illegal_actions"]), paired(m, "final_test_acc_minus_no-growth"),
               *([paired(m, "final_test_acc_minus_best_fixed")] if best else []),
               *([paired(m, "final_test_acc_minus_heuristic")] if heur else []),
               *([paired(m, "final_test_acc_minus_built_big")] if big else []),
               f"{m['wall_s']['mean']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def compact_table(summary: dict[str, Any]) -> str:
    """The results table as the README shows it: return, test accuracy, the paired differences
    and parameters added, policies sorted by test accuracy (static references last).
    """  # noqa: D205
    def cell(m: dict[str, Any], key: str, digits: int = 2) -> str:
        if key not in m:
            return "—"
        d = m[key]
        return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"

    def plain(d: dict[str, float]) -> str:
        return f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"

    best = summary["best_fixed"]
    keys = [("− no-growth", "final_test_acc_minus_no-growth"),
            *([(f"− best fixed ({best.removeprefix('scripted-')})", "final_test_acc_minus_best_fixed")]
              if best else []),
            ("− heuristic", "final_test_acc_minus_heuristic"),
            ("− built big", "final_test_acc_minus_built_big")]
    keys = [(h, k) for h, k in keys if any(k in m for m in summary["policies"].values())]
    head = ["policy", "return", "test acc %", *[h for h, _ in keys], "+params", "illegal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(p, m) for p, m in summary["policies"].items() if m["cases"]]
    rows.sort(key=lambda r: (r[0].startswith(STATIC), -r[1]["final_test_acc"]["mean"]))
    for p, m in rows:
        name = p if m["cases"] == summary["cases"] else f"{p} ({m['cases']}/{summary['cases']} cases)"
        lines.append("| " + " | ".join([
            name, "—" if p.startswith(STATIC) else plain(m["episode_return"]),
            plain(m["final_test_acc"]), *[cell(m, k) for _, k in keys],
            f"{m['params_added']['mean']:.0f}", f"{m['illegal_actions']['mean']:.2f}"]) + " |")
    return "\n".join(lines)


# ---- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``esper-bench`` argument parser."""
    p = argparse.ArgumentParser(prog="esper-bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policies", default="no-growth,random,heuristic,ucb-heuristic,scripted,static",
                   help="comma-separated baselines; 'scripted' = every fixed single-blueprint "
                        "policy; 'static' = every static reference (static-<blueprint>: the "
                        "host built with that seed from the start)")
    p.add_argument("--group", action="append", default=[], metavar="LABEL=P1,P2,...",
                   help="a row whose quantities are, per case, the mean over these policies (e.g. "
                        "an algorithm's training seeds; repeatable)")
    p.add_argument("--leaderboard-out", metavar="DIR",
                   help="write a leaderboard entry per policy (its JSON and episode records) "
                        "into DIR/<protocol>/; the options must be a protocol's "
                        "(agents.leaderboard.PROTOCOLS)")
    p.add_argument("--entry-authors", default="esper_env maintainers",
                   help="authors of the entries --leaderboard-out writes")
    p.add_argument("--validate-entry", metavar="FILE",
                   help="replay a leaderboard entry's episodes and recompute its row, then exit "
                        "(0: reproduced or stale, 1: it does not reproduce)")
    p.add_argument("--run-model", action="store_true",
                   help="with --validate-entry: also play the entry's policy (a baseline or a "
                        "model it ships; the model is unpickled) and compare its actions")
    p.add_argument("--no-built-big", action="store_true",
                   help="skip the static references of the grown architectures that no "
                        "static-* row covers (and the 'built big' column they complete)")
    p.add_argument("--model", action="append", default=[], metavar="RUN", help="esper-train run folder")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per policy (default 20; with an instance set, 3 per instance)")
    p.add_argument("--first-seed", type=int, default=1000, help="first seed (1000+: held out)")
    p.add_argument("--split", choices=("train", "test"), default="test", help="instance split")
    p.add_argument("--reward-modes", default=",".join(REWARD_MODES),
                   help="reward modes to play every episode under (the table uses the first)")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes, or CPUs of a local Ray instance (1 torch thread each)")
    p.add_argument("--chunk", type=int, default=5, help="episodes per task (the unit sent to a worker)")
    p.add_argument("--vec-env", choices=("env", "batched"), default="env",
                   help="env: one EsperEnv per episode; batched: each policy's episodes as one "
                        "batched work queue of --n-envs lanes (a task per policy and mode)")
    p.add_argument("--n-envs", type=int, default=16, help="lanes of a batched work queue")
    p.add_argument("--ray", action="store_true", help="run the tasks on Ray (a local instance by default)")
    p.add_argument("--ray-address", help="address of an existing Ray cluster (implies --ray), e.g. auto "
                                         "or ray://head:10001; nodes need esper-env installed")
    p.add_argument("--out", default="results/bench", help="folder for table.md, bench.jsonl and the PNGs")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib pictures")
    p.add_argument("--curve-policies", default=None,
                   help="policies of the gain-curve picture (default: no-growth and heuristic, "
                        "those that play)")
    p.add_argument("--select-on", metavar="BENCH_JSONL",
                   help="an esper-bench run on other cases (the training split, validation "
                        "seeds): its best fixed script, trained agent and static reference join "
                        "the gain curves")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (else a bar on a terminal, one line per finished task "
                        "on stderr otherwise)")
    add_env_arguments(p)
    return p


BASELINES = ("no-growth", "random", "heuristic", "ucb-heuristic")
"""The baselines that are neither scripts, static references nor trained agents."""


def curve_policies(args: argparse.Namespace, playing: list[str],
                   cases: set[tuple[int, str | None]]) -> dict[str, Any]:
    """The policies of the gain-curve picture: ``--curve-policies``, plus, with ``--select-on``,
    the best fixed script, the best trained agent and the best static reference of that other run
    (by mean test accuracy there), which must share no case with this one.
    """  # noqa: D205
    if args.curve_policies is None:  # the default: those of no-growth and the heuristic that play
        chosen = [n for n in ("no-growth", "heuristic") if n in playing]
    else:
        chosen = [n.strip() for n in args.curve_policies.split(",") if n.strip()]
    source = None
    if args.select_on:
        lines = Path(args.select_on).read_text().splitlines()
        other = json.loads(lines[-1])
        shared = cases & {(e["seed"], e["instance"]) for e in other["episodes"]}
        if shared:
            raise ValueError(f"--select-on {args.select_on} shares {len(shared)} cases with this "
                             f"run (e.g. seed {min(shared)[0]}); allowed: a run on another split "
                             "or other seeds (never select on the cases shown)")
        table = other["summary"]["policies"]
        kinds = {"best fixed": lambda p: p.startswith("scripted-"),
                 "best static": lambda p: p.startswith(STATIC),
                 "best agent": lambda p: not p.startswith(("scripted-", STATIC, BUILT_BIG))
                 and p not in BASELINES}
        for test in kinds.values():
            pool = [p for p in table if test(p) and p in playing and table[p].get("cases")]
            if pool:
                chosen.append(max(pool, key=lambda p: table[p]["final_test_acc"]["mean"]))
        source = str(args.select_on)
    unknown = [n for n in chosen if n not in playing]
    if unknown:
        raise ValueError(f"--curve-policies {unknown[0]!r} does not play in this run; allowed: "
                         f"{playing}")
    return {"policies": list(dict.fromkeys(chosen)), "selected_on": source}


def write_pictures(episodes: list[dict[str, Any]], summary: dict[str, Any], out: Path,
                   curves: dict[str, Any]) -> dict[str, Any]:
    """The PNGs (:mod:`agents.plots`; the three gain pictures need no-growth) and
    ``pictures.json``: what each legend names, and how the gain curves' policies were chosen.
    """  # noqa: D205
    from agents.plots import plot_forest, plot_gain_curves, plot_gain_vs_params, plot_timelines

    pictures = [plot_timelines(episodes, out / "timelines.png")]
    if "no-growth" in summary["policies"]:  # the gains are over no-growth on the same episodes
        pictures[:0] = [plot_forest(summary, out / "forest.png"),
                        plot_gain_curves(episodes, out / "gain_curves.png", curves["policies"]),
                        plot_gain_vs_params(episodes, out / "gain_vs_params.png")]
    index = {p.path.name: list(p.labels) for p in pictures}
    index["curves"] = curves
    (out / "pictures.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def _validate(path: str, run_model: bool) -> int:
    """``--validate-entry``: print the verdict; 1 if the entry does not reproduce."""
    from agents.leaderboard import EntryError, validate_entry

    try:
        v = validate_entry(path, run_policy=run_model)
    except EntryError as e:
        print(f"esper-bench: error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {v.status}")
    for m in v.messages:
        print(f"  {m}")
    return 0 if v.ok else 1


def _write_entries(args: argparse.Namespace, protocol: Any, tasks: list[dict[str, Any]],
                   staging: Path, command: str, models: dict[str, str]) -> None:
    """One leaderboard entry per policy from the records its tasks wrote (in plan order)."""
    import shutil

    from agents.leaderboard import write_entry
    from esper_env.records import read_records

    by_policy: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        if "record" in t:
            by_policy.setdefault(t["policy"], []).extend(read_records(t["record"]))
    out = Path(args.leaderboard_out)
    for name, records in by_policy.items():
        policy = {"model": models[name]} if name in models else {"baseline": name}
        code = models.get(name, "agents/policies.py" if name != "heuristic" and
                          name != "ucb-heuristic" else "agents/heuristic.py")
        path = write_entry(out, protocol, name, records, command, args.entry_authors, code, policy)
        print(f"wrote the leaderboard entry {path}")
    shutil.rmtree(staging, ignore_errors=True)


def _chunks(plan: list[Any], size: int) -> list[list[Any]]:
    return [plan[i:i + size] for i in range(0, len(plan), size)]


def static_task(name: str, arch: tuple[tuple[int, str], ...], spec: EnvSpec, mode: str,
                plan: list[Any], threads: int, tags: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """A task that plays ``plan`` with the host built as ``arch`` from the start, waiting."""
    s = spec.replace_config(reward_mode=mode, static_seeds=arch)
    return {"policy": name, "model": None, "spec": s.to_json(), "mode": mode, "plan": plan,
            "threads": threads, "sequential": False, "batched": None, "play_as": "no-growth",
            "static": True, **({"tags": tags} if tags else {})}


def _run_all(tasks: list[dict[str, Any]], args: argparse.Namespace, label: str) -> list[Any]:
    """Run ``tasks`` on local workers or Ray, with progress."""
    with TaskProgress([len(t["plan"]) for t in tasks], label, quiet=args.quiet) as bar:
        if args.ray or args.ray_address:
            return run_on_ray(_run_task, tasks, args.ray_address, args.workers, progress=bar.done)
        import torch

        before = torch.get_num_threads()  # each task sets its threads: give this process its count back
        try:
            return run_tasks(_run_task, tasks, args.workers, None, progress=bar.done)
        finally:
            torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-bench``."""
    args = build_parser().parse_args(argv)
    if args.validate_entry:
        return _validate(args.validate_entry, args.run_model)
    modes = [m.strip() for m in args.reward_modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in REWARD_MODES]
    if unknown or not modes:
        print(f"esper-bench: error: reward modes {unknown or modes} invalid; allowed: {REWARD_MODES}",
              file=sys.stderr)
        return 2
    if args.chunk < 1 or args.workers < 1 or args.n_envs < 1:
        print(f"esper-bench: error: --chunk {args.chunk}, --workers {args.workers} and --n-envs "
              f"{args.n_envs} must be >= 1", file=sys.stderr)
        return 2
    groups = {}
    for g in args.group:
        label, _, members = g.partition("=")
        groups[label.strip()] = [m.strip() for m in members.split(",") if m.strip()]
        if not label.strip() or not groups[label.strip()]:
            print(f"esper-bench: error: --group {g!r} is invalid; allowed: LABEL=POLICY,POLICY,...",
                  file=sys.stderr)
            return 2
    # test accuracy every epoch, for the pictures (reporting only: nothing else changes)
    spec = EnvSpec.from_kwargs(**env_kwargs_from(args), report_test_acc=True)
    if spec.esper_config.task.instance_set is not None:
        spec = spec.replace_config(instance_split=args.split)
    probe = spec.make()
    names = []
    blueprints = probe.unwrapped.codec.blueprints
    for name in (n.strip() for n in args.policies.split(",") if n.strip()):
        names += ([f"scripted-{b}" for b in blueprints] if name == "scripted" else
                  [f"{STATIC}{b}" for b in blueprints] if name == "static" else [name])
    bad = [n for n in names if n.startswith(STATIC) and n[len(STATIC):] not in blueprints]
    try:
        if bad:
            raise ValueError(f"policy {bad[0]!r} is invalid; allowed: static-<blueprint> with a "
                             f"blueprint of {blueprints}")
        sequential = {n: bool(getattr(make_baseline(n, probe), "learns_across_episodes", False))
                      for n in names if not n.startswith(STATIC)}
    except (ValueError, KeyError) as e:
        print(f"esper-bench: error: {e}", file=sys.stderr)
        return 2
    n_instances = len(probe.unwrapped.instances)
    plan = episode_plan(probe, args.first_seed, args.seeds or 20, per_instance=args.seeds or 3)
    playing = names + [Path(r).name for r in args.model]
    try:
        for label, members in groups.items():
            if label in playing or not set(members) <= set(playing):
                raise ValueError(f"--group {label}={','.join(members)} is invalid; allowed: a new "
                                 f"label and policies that play in this run, {playing}")
        curves = curve_policies(args, playing, {(seed, instance_name(probe, o)) for seed, o in plan})
    except ValueError as e:
        print(f"esper-bench: error: {e}", file=sys.stderr)
        return 2
    protocol = None
    if args.leaderboard_out:
        from agents.leaderboard import matching_protocol

        try:
            if args.vec_env == "batched":
                raise ValueError("--leaderboard-out records each episode on its own env; "
                                 "allowed: --vec-env env")
            protocol = matching_protocol(args, spec)
        except ValueError as e:
            print(f"esper-bench: error: {e}", file=sys.stderr)
            return 2
    probe.close()
    threads = 1  # one torch thread everywhere: results do not depend on how the episodes were spread
    chunks = _chunks(plan, args.chunk)
    tasks = []
    players_models: dict[str, str] = {}
    for mode in modes:
        players = [(name, None, spec.replace_config(reward_mode=mode)) for name in names
                   if not name.startswith(STATIC)]
        seq = dict(sequential)
        for run in args.model:
            players_models[Path(run).name] = run
            _, run_spec = load_model(run)
            run_spec = run_spec.replace_config(reward_mode=mode, report_test_acc=True)
            if run_spec.esper_config.task.instance_set is not None:
                run_spec = run_spec.replace_config(instance_split=args.split)
            players.append((Path(run).name, str(run), run_spec))
            seq[Path(run).name] = False
        # policies that learn across episodes play all of them, in order, in one task
        batched = args.vec_env == "batched"
        tasks += [{"policy": name, "model": model, "spec": s.to_json(), "mode": mode, "plan": chunk,
                   "threads": threads, "sequential": seq[name],
                   "batched": args.n_envs if batched and not seq[name] else None}
                  for name, model, s in players
                  for chunk in ([plan] if seq[name] or batched else chunks)]
    # the static references: under the table's reward mode only (their outcome is the same in all)
    tasks += [static_task(name, ((0, name[len(STATIC):]),), spec, modes[0], chunk, threads)
              for name in names if name.startswith(STATIC) for chunk in chunks]
    staging = None
    if protocol is not None:  # each task of the table's mode records its episodes in its own file
        import tempfile

        staging = Path(tempfile.mkdtemp(prefix="esper-bench-records-"))
        for i, t in enumerate(tasks):
            if t["mode"] == modes[0] and not t.get("static"):
                t["record"] = str(staging / f"{i:05d}.jsonl")
    t0 = time.perf_counter()
    done = _run_all(tasks, args, "esper-bench")
    episodes = [e for d in done for e in d]
    needs = {} if args.no_built_big or "no-growth" not in names else built_big_needs(episodes,
                                                                                      modes[0])
    if needs:  # grown architectures that no static-* row covers: their own static references
        options = {seed: opts for seed, opts in plan}
        extra = [static_task(f"{BUILT_BIG} " + "+".join(f"{k}:{b}" for k, b in arch), arch, spec,
                             modes[0], chunk, threads, tags={"reference": BUILT_BIG})
                 for arch, cases in needs.items()
                 for chunk in _chunks([(seed, options[seed]) for seed, _ in cases], args.chunk)]
        episodes += [e for d in _run_all(extra, args, "esper-bench built-big") for e in d]
    summary = summarize(episodes, modes[0], groups)
    checks = [integrity(episodes, m) for m in modes]
    table = markdown_table(summary)
    lines = [table, ""]
    for c in checks:
        lo, hi = c["spearman_ci95"]
        lines.append(f"- reward mode `{c['mode']}`: Spearman(mean return, mean test acc) = "
                     f"{c['spearman']:.2f} "
                     f"(95 % bootstrap interval {lo:.2f}–{hi:.2f}); per-episode Spearman of the paired "
                     f"deltas against no-growth = {c['episode_spearman']:.2f}")
    prov = provenance()
    where = (f"{spec.esper_config.task.instance_set} {args.split} split, {len(plan)} episodes"
             if n_instances else f"{spec.esper_config.task.name}, seeds {plan[0][0]}–{plan[-1][0]}")
    command = shlex.join(["esper-bench", *(argv if argv is not None else sys.argv[1:])])
    footer = (f"{where}; table under reward mode `{modes[0]}`; {prov['machine']}, {prov['cores']} "
              f"cores, torch {prov['torch']}, commit {prov['commit']}, episode version "
              f"{prov['episode_version']}; {time.perf_counter() - t0:.0f} s. Command: `{command}`")
    lines.append("\n" + footer)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "table-compact.md").write_text(compact_table(summary) + "\n\n" + footer + "\n")
    with (out / "bench.jsonl").open("a") as f:
        f.write(json.dumps({**prov, "argv": argv if argv is not None else sys.argv[1:],
                            "summary": summary, "integrity": checks, "episodes": episodes}) + "\n")
    if protocol is not None and staging is not None:
        _write_entries(args, protocol, tasks, staging, command, dict(players_models))
    if not args.no_plots:
        shown = [e for e in episodes if e["reward_mode"] == modes[0] and not e.get("over_budget")
                 and e.get("reference") != BUILT_BIG]
        pictures = write_pictures(shown, summary, out, curves)
        print(f"\nwrote {out / 'table.md'}, {out / 'bench.jsonl'} and {len(pictures) - 1} PNGs "
              f"(their legends in {out / 'pictures.json'})")
    else:
        print(f"\nwrote {out / 'table.md'}, {out / 'bench.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
