"""The examples in the docstrings run and print what they claim."""

from __future__ import annotations

import doctest

import esper_env.env


def test_env_docstring_examples_pass():
    result = doctest.testmod(esper_env.env, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4
    assert result.failed == 0
