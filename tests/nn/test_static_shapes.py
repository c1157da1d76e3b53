"""Fixed-shape mini-batch steps (``static_shapes``) and the CUDA-graph bookkeeping (``cuda_graphs``).

CUDA graphs need every tensor of a captured step to keep its shape and address. On the CPU these
tests check what that rests on: fixed-capacity seed groups written in place, the static engine
giving the default engine's episodes, and the graph runner's bookkeeping (static inputs, a
warm-up that leaves no trace, a capture per shape and seed-group set) through
:class:`EagerGraphBackend`, which replays a captured step by calling it. The capture itself is
checked on a GPU (the CUDA-only test at the end, and ``benchmarks/gpu_checks.sh``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper_env.errors import ConfigError
from esper_env.nn.batch_trainer import EagerGraphBackend
from esper_env.nn.batched import SeedGroup
from esper_env.nn.blueprints import build_blueprint
from esper_env.vector import EsperVectorEnv

KW = dict(task="digits", max_epochs=10, min_germinate_epoch=2, gates={"min_training_epochs": 1},
          torch_threads=1, germination_gate=False)
PLANS = [("conv_heavy", 0), ("attention", 3), ("depthwise", 4), (None, 0)]
"""Lane i germinates blueprint PLANS[i][0] from step PLANS[i][1]: two groups share a block."""


def _act(names: tuple[str, ...], mask: np.ndarray, blueprint: str | None) -> int:
    for j, n in enumerate(names):
        if blueprint is not None and mask[j] and (blueprint in n or n.startswith("FOSSILIZE")):
            return j
    return 0


def _episodes(steps: int = 9, device: str = "cpu", **options) -> tuple[list, EsperVectorEnv]:
    vec = EsperVectorEnv(len(PLANS), device=device, **KW, **options)
    vec.reset(seed=60)
    names, out = vec.template.action_names, []
    for t in range(steps):
        masks = vec.action_masks()
        acts = [_act(names, masks[i], bp if t >= start else None)
                for i, (bp, start) in enumerate(PLANS)]
        obs, r, d, _, info = vec.step(acts)
        out.append((obs.copy(), r.copy(), [list(s) for s in info["stages"]]))
    return out, vec


def test_static_shapes_give_the_default_engines_episodes() -> None:
    default, _ = _episodes()
    static, vec = _episodes(static_shapes=True)
    assert vec.trainer.static and all(g.n_rows == 4 for g in vec.trainer.groups.values())
    assert len(vec.trainer.groups) == 3 and vec.trainer.twins is not None
    for (o1, r1, s1), (o2, r2, s2) in zip(default, static, strict=True):
        np.testing.assert_allclose(o2, o1, atol=1e-5)
        np.testing.assert_allclose(r2, r1, atol=1e-3)
        assert s1 == s2
    assert any("FOSSILIZED" in s or "PROBATIONARY" in s for s in static[-1][2])


def test_graph_mode_replays_the_static_steps_exactly_and_captures_once_per_shape() -> None:
    static, _ = _episodes(static_shapes=True)
    backend = EagerGraphBackend()
    graphed, vec = _episodes(cuda_graphs=backend)
    for (o1, r1, s1), (o2, r2, s2) in zip(static, graphed, strict=True):
        # bit for bit: the warm-up steps left no trace and every replay read this batch
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and s1 == s2
    graphs = vec.trainer._graphs
    assert graphs is not None and backend.captures >= 2  # a full batch and the last, shorter one
    assert set(graphs.graphs) and all(key[2] == tuple(vec.trainer.groups) for key in graphs.graphs)
    before = backend.captures
    for _ in range(2):  # no new seed group, no new shape: replays only
        vec.step([0] * 4)
    assert backend.captures == before


def test_cuda_graphs_on_the_cpu_is_refused_naming_the_device() -> None:
    with pytest.raises(ConfigError, match=r"cuda_graphs=True needs a CUDA device; the data are "
                                          r"on cpu"):
        EsperVectorEnv(2, cuda_graphs=True, **KW)
    with pytest.raises(ConfigError, match=r"cuda_graphs='yes' is invalid"):
        EsperVectorEnv(2, cuda_graphs="yes", **KW)


def test_a_fixed_capacity_group_writes_and_clears_rows_in_place() -> None:
    seeds = [build_blueprint("cnn", "conv_light", 4) for _ in range(3)]
    for i, s in enumerate(seeds):
        with torch.no_grad():
            for p in s.parameters():
                p.normal_(generator=torch.Generator().manual_seed(i))
    group = SeedGroup(seeds[0], 0.1, 0.9, capacity=4)
    addresses = {n: t.data_ptr() for n, t in group.params.items()}
    group.add(2, seeds[0])
    group.add(0, seeds[1])
    assert group.lanes == [0, 2] and group.n_rows == 4 and len(group) == 2
    assert group.row(2) == 2
    kept = group.member(0)
    group.remove(2)
    assert group.lanes == [0] and all(t[2].abs().sum() == 0 for t in group.params.values())
    assert all(torch.equal(group.member(0)[n], kept[n]) for n in kept)
    assert {n: t.data_ptr() for n, t in group.params.items()} == addresses
    x = torch.randn(2, 16, 6, 6)
    assert group(x).shape == x.shape  # every row runs, empty ones too
    with pytest.raises(ValueError, match="lane 2 has no seed"):
        group.row(2)
    with pytest.raises(ValueError, match=r"lane 4 is outside this group's capacity; allowed: 0 \.\. 3"):
        group.add(4, seeds[2])
    with pytest.raises(ValueError, match="capacity=0 is invalid"):
        SeedGroup(seeds[0], 0.1, 0.9, capacity=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a GPU")
def test_cuda_graphs_give_the_eager_static_episodes_on_a_gpu() -> None:
    eager, _ = _episodes(device="cuda", static_shapes=True)
    graphed, vec = _episodes(device="cuda", cuda_graphs=True)
    assert vec.trainer._graphs is not None and vec.trainer._graphs.graphs
    for (o1, r1, s1), (o2, r2, s2) in zip(eager, graphed, strict=True):
        np.testing.assert_allclose(o2, o1, atol=1e-4)
        np.testing.assert_allclose(r2, r1, atol=0.6)  # a flipped image or two (cuDNN algorithms)
        assert s1 == s2


def test_static_shapes_on_an_instance_set_with_padded_hosts_and_masked_phases() -> None:
    """Narrower hosts' seeds read some of the stack's channels; half training sets mask phases."""
    kw = dict(instance_set="digits-mix", instance_split="test", torch_threads=1,
              germination_gate=False, min_germinate_epoch=2, gates={"min_training_epochs": 1})
    runs = []
    for static in (False, True):
        vec = EsperVectorEnv(6, static_shapes=static, **kw)
        vec.reset(seed=100)
        names, out = vec.template.action_names, []
        for t in range(5):
            masks = vec.action_masks()
            acts = [_act(names, masks[i], ("conv_light", "attention", "depthwise")[i % 3]
                         if t >= 1 + i % 3 else None) for i in range(6)]
            obs, r, *_ = vec.step(acts)
            out.append((obs.copy(), r.copy()))
        runs.append(out)
        widths = {vec.trainer.lanes[i].shape.channels for i in range(6)}
    assert len(widths) >= 2  # seeds of other widths than the stack's
    for (o1, r1), (o2, r2) in zip(*runs, strict=True):
        np.testing.assert_allclose(o2, o1, atol=1e-5)
        np.testing.assert_allclose(r2, r1, atol=1e-3)
