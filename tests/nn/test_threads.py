"""num_threads: torch's thread count for one block, given back after (errors included)."""

from __future__ import annotations

import pytest
import torch

from esper_env.nn.threads import num_threads


def test_num_threads_sets_the_count_in_the_block_and_restores_it_even_on_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with num_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="inside"), num_threads(other):
        raise ValueError("inside")
    assert torch.get_num_threads() == before
    with num_threads(None):  # None: the count in force
        assert torch.get_num_threads() == before
