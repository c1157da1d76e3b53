"""Benchmarks of esper_env and agents: runnable modules, never timed assertions in tests.

Run each from the repository root as a module, e.g. ``python -m benchmarks.bench_growth --seeds 20``
(``benchmarks/README.md`` lists them). Every benchmark prints its table and appends one JSON line
with provenance (:func:`agents.provenance.provenance`: machine, torch version, commit) to the
untracked ``results/`` folder, or to the tracked ``benchmarks/results/`` only with ``--record``
(:mod:`benchmarks._common`).
"""
