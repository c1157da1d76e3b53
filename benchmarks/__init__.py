"""Benchmarks of esper_env and agents: two runners, never timed assertions in tests.

Run them from the repository root as modules: ``python -m benchmarks.study <recipe>`` for the
studies (policies × cases → episodes → a table of means with 95 % bootstrap intervals, built on
esper-bench's rollout, worker pool and statistics; :mod:`benchmarks.study`) and
``python -m benchmarks.speed <recipe>`` for speed and memory (:mod:`benchmarks.speed`);
``benchmarks/README.md`` lists the recipes. Every recipe prints its table and appends one JSON line
with provenance (:func:`agents.provenance.provenance`: machine, torch version, commit) to the
untracked ``results/`` folder, or to the tracked ``benchmarks/results/`` only with ``--record``
(:mod:`benchmarks._common`). ``make_instance_set`` and ``cifar10_from_npm`` are tools.
"""
