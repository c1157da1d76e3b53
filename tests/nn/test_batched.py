"""The stacked hosts of the batched engine equal K separate hosts within floating-point tolerance."""

from __future__ import annotations

import copy

import pytest
import torch

from esper_env.config import EsperConfig
from esper_env.nn.batched import StackedHosts, StackedSGD, evaluate, gather_batches, train_epoch
from esper_env.nn.data import load_task
from esper_env.nn.trainer import Trainer

TOL = dict(rtol=1e-5, atol=1e-6)
"""Tolerance of one epoch (other kernels and summation orders; float32). Training amplifies the
last-bit differences: after a second epoch they reach ~1e-3 of a weight (the parity protocol of
``shared/reference/batching.md``: the first epoch within tolerance, outcomes over many seeds)."""


def _trainers(k: int, task: str = "digits", **kwargs) -> tuple[EsperConfig, list[Trainer]]:
    cfg = EsperConfig(task=task, **kwargs)
    data = load_task(task, episode_seed=0, device="cpu")
    return cfg, [Trainer(cfg, data, model_seed=10 + i, data_seed=100 + i) for i in range(k)]


def _stack(cfg: EsperConfig, trainers: list[Trainer], lr: list[float] | None = None,
           memory_format: torch.memory_format | None = None) -> tuple[StackedHosts, StackedSGD]:
    hosts = StackedHosts([copy.deepcopy(t.model.host) for t in trainers], memory_format)
    o = cfg.optimiser
    opt = StackedSGD(list(hosts.parameters()), hosts.k, lr or [o.host_lr] * hosts.k,
                     o.host_momentum, o.host_weight_decay)
    return hosts, opt


def test_a_stack_computes_each_hosts_function_on_its_own_inputs() -> None:
    cfg, trainers = _trainers(3)
    hosts, _ = _stack(cfg, trainers)
    x = torch.randn(3, 5, 1, 8, 8)
    stacked = hosts.eval()(x.transpose(0, 1).reshape(5, 3, 8, 8))
    for k, t in enumerate(trainers):
        t.model.host.eval()
        torch.testing.assert_close(stacked[k], t.model.host(x[k]), **TOL)


@pytest.mark.parametrize("memory_format", [None, torch.channels_last], ids=["default", "nhwc"])
def test_one_epoch_of_k_stacked_hosts_equals_k_trainers_no_growth_epochs(memory_format) -> None:
    cfg, trainers = _trainers(3)
    hosts, opt = _stack(cfg, trainers, memory_format=memory_format)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    data = trainers[0].data
    single = [t.train_epoch()[:2] for t in trainers]
    loss, acc = train_epoch(hosts, opt, data.train_x, data.train_y, gens,
                            cfg.optimiser.batch_size)
    for k, (l1, a1) in enumerate(single):
        assert loss[k].item() == pytest.approx(l1, rel=1e-5)
        assert acc[k].item() == pytest.approx(a1, abs=0.2)  # a flipped argmax at most
    for k, t in enumerate(trainers):
        state = hosts.member_state(k)
        for name, value in t.model.host.state_dict().items():
            torch.testing.assert_close(state[name], value, **TOL, msg=name)
    val_loss, val_acc = evaluate(hosts, data.val_x, data.val_y)
    for k, t in enumerate(trainers):
        l1, a1, _ = t.validate()
        assert val_loss[k].item() == pytest.approx(l1, rel=1e-5)
        assert val_acc[k].item() == pytest.approx(a1, abs=0.3)


def test_per_member_learning_rates_and_independence() -> None:
    # Host 1's learning rate changes host 1 only; a zero rate leaves its weights as they were.
    cfg, trainers = _trainers(3)
    base, base_opt = _stack(cfg, trainers)
    other, other_opt = _stack(cfg, trainers, lr=[cfg.optimiser.host_lr, 0.0,
                                                 cfg.optimiser.host_lr])
    data = trainers[0].data
    for hosts, opt in ((base, base_opt), (other, other_opt)):
        gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
        train_epoch(hosts, opt, data.train_x, data.train_y, gens, cfg.optimiser.batch_size)
    start = trainers[1].model.host.state_dict()
    for name, value in other.member_state(1).items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, start[name]), name
    for k in (0, 2):
        for name, value in other.member_state(k).items():
            assert torch.equal(value, base.member_state(k)[name]), (k, name)


def test_gather_batches_puts_each_hosts_samples_in_its_channels() -> None:
    x = torch.arange(6 * 2 * 2 * 2, dtype=torch.float32).view(6, 2, 2, 2)
    y = torch.arange(6)
    index = torch.tensor([[0, 5], [3, 1]])
    xb, yb = gather_batches(x, y, index)
    assert xb.shape == (2, 4, 2, 2) and yb.tolist() == [[0, 5], [3, 1]]
    assert torch.equal(xb[1, 2:4], x[1]) and torch.equal(xb[0, 0:2], x[0])


def test_hosts_of_different_shapes_are_refused() -> None:
    cfg, trainers = _trainers(1)
    _, wide = _trainers(1, host_channels=(4, 4, 8))
    with pytest.raises(ValueError, match=r"hosts\[1\] has shape"):
        StackedHosts([trainers[0].model.host, wide[0].model.host])
    with pytest.raises(ValueError, match=r"lr has shape \(2,\); allowed: \(1,\)"):
        _stack(cfg, trainers, lr=[0.1, 0.2])


def _seeds(blueprint: str, channels: int, seeds: list[int]) -> list[torch.nn.Module]:
    from esper_env.nn.blueprints import build_blueprint
    from esper_env.nn.trainer import build_seeded

    return [build_seeded(s, lambda: build_blueprint("cnn", blueprint, channels)) for s in seeds]


@pytest.mark.parametrize("hand_batched", [True, False], ids=["hand-batched", "vmap"])
@pytest.mark.parametrize("blueprint", ["norm", "attention", "depthwise", "conv_light",
                                       "conv_heavy"])
def test_a_seed_group_trains_each_member_as_its_own_module_with_sgd(blueprint: str,
                                                                    hand_batched: bool) -> None:
    from esper_env.nn.batched import SeedGroup

    mods = _seeds(blueprint, 8, [3, 4, 5])
    group = SeedGroup(mods[0], lr=0.05, momentum=0.9)
    assert (group._stacked is not None) is True  # every CNN blueprint has a hand-batched pass
    if not hand_batched:
        group._stacked = None  # the vmap fallback that other modules use
    for lane, m in zip((7, 2, 5), mods, strict=True):
        group.add(lane, copy.deepcopy(m))
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in mods]
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(6, 3 * 8, 4, 4, generator=g)
        if step == 1:
            x = x.contiguous(memory_format=torch.channels_last)
        out = group(x)
        assert out.shape == x.shape
        members = [x[:, 8 * i:8 * (i + 1)] for i in range(3)]
        for i, m in enumerate(mods):
            torch.testing.assert_close(out[:, 8 * i:8 * (i + 1)], m(members[i]), **TOL)
        group.zero_grad()
        out.unflatten(1, (3, 8)).square().mean(dim=(0, 2, 3, 4)).sum().backward()
        group.step()
        for opt in opts:
            opt.zero_grad()
        sum(m(members[i]).square().mean() for i, m in enumerate(mods)).backward()
        for opt in opts:
            opt.step()
    for lane, m in zip((7, 2, 5), mods, strict=True):
        for name, value in m.state_dict().items():
            torch.testing.assert_close(group.member(lane)[name], value, **TOL, msg=name)


def test_a_cull_and_a_germination_leave_the_other_members_as_they_were() -> None:
    from esper_env.nn.batched import SeedGroup

    mods = _seeds("conv_light", 4, [1, 2, 3])
    group = SeedGroup(mods[0], lr=0.1, momentum=0.9)
    for lane, m in enumerate(mods):
        group.add(lane, m)
    x = torch.randn(5, 3 * 4, 2, 2)
    group(x).square().sum().backward()
    group.step()
    before = {lane: group.member(lane) for lane in (0, 2)}
    momentum = group.bufs["block.conv.weight"][[0, 2]].clone()
    group.remove(1)
    group.add(9, _seeds("conv_light", 4, [8])[0])
    assert group.lanes == [0, 2, 9]
    for lane in (0, 2):
        for name, value in group.member(lane).items():
            assert torch.equal(value, before[lane][name])
    assert torch.equal(group.bufs["block.conv.weight"][:2], momentum)
    assert not group.bufs["block.conv.weight"][2].any()
    with pytest.raises(ValueError, match="lane 0 already has a seed"):
        group.add(0, mods[0])
    with pytest.raises(ValueError, match="does not match the group's blueprint"):
        group.add(4, _seeds("norm", 4, [1])[0])
