"""Fixtures of the torch-layer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """These models are tiny: one torch thread (the shared fixture in tests/conftest.py)."""
    yield
