"""The recipes of ``python -m benchmarks.speed``: one module per measurement.

Each module has ``measure(args) -> list[record]`` (it prints its table as it goes; every record's
``bench`` key names its result file) and, where it has options of its own, ``add_options(parser)``;
:mod:`benchmarks.speed` declares the shared options, runs a recipe and saves its records.
"""
