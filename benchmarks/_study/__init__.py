"""The recipes of ``python -m benchmarks.study`` and the machinery they share (:mod:`.core`).

Each recipe module defines ``RECIPE`` (:class:`benchmarks._study.core.Recipe`): which policies
play, in which env, on which cases, and what its table and record hold. :mod:`benchmarks.study`
declares the options and runs them.
"""
