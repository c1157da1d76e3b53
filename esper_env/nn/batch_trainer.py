"""BatchedTrainer: the torch side of K episodes at once, one stacked computation per epoch.

It answers what :class:`~esper_env.nn.trainer.Trainer` answers for one episode (``run_epoch``,
``roll_back``, ``settle``, ``facts``, ``seed_costs``), for K *lanes* at once: lane ``i`` is one
episode, and the records it takes and returns are the shared transition's
(:mod:`esper_env.core.episode`), one per lane. The hosts are one
:class:`~esper_env.nn.batched.StackedHosts`, the seeds one
:class:`~esper_env.nn.batched.SeedGroup` per (slot, blueprint) holding the lanes that have such
a seed, the seedless twins a second stack; every lane draws its own mini-batch order from its own
generator, so a lane's numbers do not depend on the other lanes beyond floating-point rounding.

Scope (refused with a clear error otherwise): CNN tasks whose data do not depend on the episode
seed (``digits``, ``cifar10``; not ``synthetic``), the whole training split
(``train_fraction=1``, ``label_noise=0``), the ``add`` and ``multiply`` blends, no gradient
clipping, one host shape and learning rate for all lanes. Isolation is structural here (the seeds
see the detached activation), so ``isolation_violations`` is always 0; the single env measures it.
An exception raised by the stacked computation is a fault of every lane that trained in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from esper_env.config import EsperConfig
from esper_env.core.episode import EpochRequest, Settlement, SlotPlan, TestReading
from esper_env.core.observation import EpisodeFacts
from esper_env.core.state import EpochReport, Germination, SlotMetrics, TwinReading
from esper_env.errors import ConfigError
from esper_env.nn.batched import SeedGroup, StackedHosts, StackedSGD, gather_batches, per_channel
from esper_env.nn.blueprints import blueprint_param_count, build_blueprint, count_parameters
from esper_env.nn.data import TaskData
from esper_env.nn.slots import _StraightThrough
from esper_env.nn.trainer import EVAL_CHUNK, build_seeded
from esper_env.tasks import build_host

_SCOPE = "the batched engine supports"


def check_batchable(cfg: EsperConfig) -> None:
    """Raise ConfigError naming the first setting of ``cfg`` the batched engine cannot run."""
    from esper_env.tasks import get_task

    spec = get_task(cfg.task.name).spec
    checks = [
        (spec.topology == "cnn", "task", cfg.task.name, "a CNN task ('digits', 'cifar10')"),
        (cfg.task.name != "synthetic", "task", cfg.task.name,
         "a task whose data do not depend on the episode seed ('digits', 'cifar10')"),
        (cfg.task.train_fraction == 1.0, "train_fraction", cfg.task.train_fraction, "1.0"),
        (cfg.task.label_noise == 0.0, "label_noise", cfg.task.label_noise, "0.0"),
        (cfg.lifecycle.blend in ("add", "multiply"), "blend", cfg.lifecycle.blend,
         "'add' or 'multiply'"),
        (cfg.optimiser.grad_clip is None or math.isinf(cfg.optimiser.grad_clip), "grad_clip",
         cfg.optimiser.grad_clip, "None (no clipping)"),
    ]
    for ok, name, value, allowed in checks:
        if not ok:
            raise ConfigError(f"{name}={value!r} is not batchable; {_SCOPE}: {allowed}")


def lane_bytes(host: object, batch_size: int) -> int:
    """An upper estimate of one lane's training memory in bytes: every block's activations
    (before and after pooling) for one mini-batch, kept for backward and matched by their
    gradients, for the model and the twin, in float32, plus the host's weights, gradients and
    momentum.
    """  # noqa: D205
    floats = 0
    for block, point in zip(host.blocks, host.injection_points, strict=True):  # type: ignore[attr-defined]
        c, h, w = point.shape
        pooled = 4 if isinstance(block.pool, torch.nn.MaxPool2d) else 1
        floats += c * h * w * (3 * pooled + 1)  # conv, norm, relu outputs; the pooled output
    params = sum(p.numel() for p in host.parameters())  # type: ignore[attr-defined]
    return 4 * (2 * 2 * batch_size * floats + 2 * 3 * params)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device``: CUDA's free bytes, or the CPU's MemAvailable
    (Linux); None where it cannot be read.
    """  # noqa: D205
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(k: int, per_lane: int, device: torch.device) -> None:
    """Raise ConfigError naming K and the memory it needs when K lanes cannot fit on ``device``."""
    free = available_bytes(device)
    need = k * per_lane
    if free is not None and need > free:
        raise ConfigError(f"num_envs={k} needs about {need / 2**30:.2f} GiB on {device} "
                          f"({per_lane / 2**20:.2f} MiB per lane); {free / 2**30:.2f} GiB is "
                          f"available: allowed up to num_envs={max(0, free // per_lane)}")


PARTS = ("train", "validate", "counterfactual", "twin", "test", "bookkeeping")
"""Where :attr:`BatchedTrainer.seconds` puts a batched epoch's time: the host and seed
mini-batches (forward, backward, SGD), the validation pass, the counterfactual (seed-ablated)
passes, the twins (training, readings, restacking), the test passes at the episodes' ends, and
the lanes' bookkeeping (resets, germinations, checkpoints, idle lanes kept as they were)."""


class _Clock:
    """Seconds per part of :data:`PARTS`, summed while :attr:`on`."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._part: str | None = None
        self._next = ""
        self._since = 0.0
        self._stack: list[str | None] = []

    def __call__(self, part: str) -> _Clock:
        self._next = part
        return self

    def __enter__(self) -> None:
        if self.on:
            now = time.perf_counter()
            if self._part is not None:  # nested: the outer part pauses
                self.seconds[self._part] += now - self._since
            self._stack.append(self._part)
            self._part, self._since = self._next, now

    def __exit__(self, *exc: object) -> None:
        if self.on:
            now = time.perf_counter()
            self.seconds[self._part] += now - self._since  # type: ignore[index]
            self._part, self._since = self._stack.pop(), now


@dataclass
class _Seed:
    blueprint: str
    mode: str = "off"
    alpha: float = 0.0
    isolate: bool = True


@dataclass
class _Lane:
    generator: torch.Generator
    seeds: list[_Seed | None]
    twin_enabled: bool
    twin_forked: bool = False
    checkpoint: dict | None = None


class BatchedTrainer:
    """The training of K episodes (lanes) as one computation (see the module docstring).

    Args:
        cfg: the config every lane runs (its host, optimisers, slots, blend).
        data: the task's tensors on the device, shared by the lanes.
        k: the number of lanes.
        twin: keep a seedless twin per lane (contribution reward).
        memory_format: the stacks' layout (default ``torch.channels_last``, the faster one for
            grouped convolutions on the CPU).

    Lanes start empty: :meth:`reset_lane` gives lane ``i`` a fresh host before its first epoch.
    """

    def __init__(self, cfg: EsperConfig, data: TaskData, k: int, twin: bool = False,
                 memory_format: torch.memory_format | None = torch.channels_last) -> None:
        check_batchable(cfg)
        self.cfg, self.data, self.k, self.twin = cfg, data, k, bool(twin)
        self.device = data.train_x.device
        self.memory_format = memory_format
        spec = data.spec
        # its weights are overwritten by reset_lane; seeded so the global RNG stays untouched
        template = build_seeded(0, lambda: build_host(spec, cfg.host, cfg.host.bn_momentum))
        n_points = len(template.injection_points)
        points = cfg.host.injection_points
        if points is None:
            if cfg.host.n_slots > n_points:
                raise ConfigError(f"n_slots={cfg.host.n_slots} is invalid; allowed: 1..{n_points} "
                                  f"(the host has {n_points} injection points)")
            points = tuple(range(n_points - cfg.host.n_slots, n_points))
        self.points = tuple(points)
        self._slot_after = {p: s for s, p in enumerate(self.points)}
        self.channels = tuple(template.injection_points[p].channels for p in self.points)
        self.n_blocks = len(template.blocks)
        self.host_params = count_parameters(template)
        self._template = template
        check_memory(k, lane_bytes(template, cfg.optimiser.batch_size), self.device)
        self.hosts = build_seeded(0, lambda: StackedHosts([template] * k, memory_format)).to(
            self.device)
        o = cfg.optimiser
        self.opt = StackedSGD(list(self.hosts.parameters()), k, [o.host_lr] * k, o.host_momentum,
                              o.host_weight_decay)
        self.twins: StackedHosts | None = None
        """The forked lanes' twins, one member per lane of :attr:`twin_lanes` (in that order)."""
        self.twin_opt: StackedSGD | None = None
        self.twin_lanes: list[int] = []
        self._twin_forks: dict[int, tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]] = {}
        self.seed_lr = float(o.seed_lr if o.seed_lr is not None else spec.seed_lr)
        self.groups: dict[tuple[int, str], SeedGroup] = {}
        self.lanes = [_Lane(torch.Generator(), [None] * len(self.points), self.twin)
                      for _ in range(k)]
        self.clock = _Clock()
        """Set ``clock.on = True`` to sum each part's seconds in ``clock.seconds`` (:data:`PARTS`)."""

    # -- lanes ------------------------------------------------------------------------------------
    def reset_lane(self, i: int, model_seed: int, data_seed: int) -> None:
        """Give lane ``i`` a fresh episode: the host a single env builds from ``model_seed``, no
        seeds, no twin, no checkpoint, and the data order of ``data_seed``.
        """  # noqa: D205
        cfg = self.cfg
        with self.clock("bookkeeping"):
            host = build_seeded(model_seed, lambda: build_host(self.data.spec, cfg.host,
                                                               cfg.host.bn_momentum))
            _write_member(self.hosts, self.opt, i, host.state_dict())
            for s, seed in enumerate(self.lanes[i].seeds):
                if seed is not None:
                    self._drop_seed(i, s)
            self.lanes[i] = _Lane(torch.Generator().manual_seed(data_seed),
                                  [None] * len(self.points), self.twin)

    def facts(self) -> EpisodeFacts:
        """The episode's constants as observed (the same for every lane)."""
        c = self.cfg
        return EpisodeFacts(
            host_params=self.host_params, host_lr=c.optimiser.host_lr,
            train_fraction=c.task.train_fraction, label_noise=c.task.label_noise,
            param_budget=c.lifecycle.param_budget, slot_channels=self.channels,
            slot_depths=tuple((q + 1) / self.n_blocks for q in self.points))

    def seed_costs(self, blueprints: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """``costs[s][b]``: parameters blueprint ``b`` would add at slot ``s``."""
        return tuple(tuple(blueprint_param_count("cnn", b, c) for b in blueprints)
                     for c in self.channels)

    # -- seeds ------------------------------------------------------------------------------------
    def _germinate(self, i: int, slot: int, blueprint: str, module_seed: int) -> Germination:
        c = self.channels[slot]
        seed = build_seeded(module_seed, lambda: build_blueprint("cnn", blueprint, c)).to(
            self.device)
        size = self.hosts.sizes[self.points[slot]]
        with torch.no_grad():
            seed.eval()
            try:
                ok = tuple(seed(torch.zeros(1, c, size, size, device=self.device)).shape) == (
                    1, c, size, size)
            except Exception:  # noqa: BLE001 - a module that cannot run fails G0 like a bad shape
                ok = False
            seed.train()
        if not ok:
            return Germination(0, False)
        key = (slot, blueprint)
        if key not in self.groups:
            self.groups[key] = SeedGroup(seed, self.seed_lr, self.cfg.optimiser.seed_momentum)
        self.groups[key].add(i, seed)
        self.lanes[i].seeds[slot] = _Seed(blueprint)
        return Germination(count_parameters(seed), True)

    def _drop_seed(self, i: int, slot: int) -> None:
        seed = self.lanes[i].seeds[slot]
        assert seed is not None
        self.groups[(slot, seed.blueprint)].remove(i)
        self.lanes[i].seeds[slot] = None

    def _apply_slots(self, i: int, plans: Sequence[SlotPlan | None]) -> None:
        for s, plan in enumerate(plans):
            seed = self.lanes[i].seeds[s]
            if seed is None:
                continue
            if plan is None:
                self._drop_seed(i, s)
            else:
                seed.mode, seed.alpha, seed.isolate = plan.mode, min(1.0, max(0.0, plan.alpha)), \
                    plan.isolate

    def _blends(self, i: int) -> bool:
        return any(s is not None and s.mode == "blend" and s.alpha > 0.0
                   for s in self.lanes[i].seeds)

    # -- the stacked forward pass -------------------------------------------------------------
    def _forward(self, x: torch.Tensor, start: int = 0, keep: Sequence[int] = (),
                 arriving: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The stacked model from block ``start`` on ``x`` (logits ``(K, N, classes)``); the
        activation arriving at each slot in ``keep`` is put into ``arriving``.
        """  # noqa: D205
        hosts = self.hosts
        if hosts.memory_format is not None:
            x = x.contiguous(memory_format=hosts.memory_format)
        for b in range(start, self.n_blocks):
            x = hosts.block(b, x)
            s = self._slot_after.get(b)
            if s is not None:
                if s in keep and arriving is not None:
                    arriving[s] = x
                x = self._slot(s, x)
        return hosts.head(x)

    def _slot(self, s: int, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // self.k
        out = x
        for (slot, _), group in self.groups.items():
            if slot != s or not len(group):
                continue
            seeds = [self.lanes[i].seeds[s] for i in group.lanes]
            live = [j for j, seed in enumerate(seeds) if seed is not None and (
                seed.mode == "incubate" or (seed.mode == "blend" and seed.alpha > 0.0))]
            if not live:
                continue
            lanes = [group.lanes[j] for j in live]
            every = lanes == list(range(self.k))
            channels = None if every else _channels(lanes, c, x.device)
            hl = x if channels is None else _take(x, channels)  # (B, G' * C, H, W)
            iso = [seeds[j].isolate for j in live]  # type: ignore[union-attr]
            hs = hl.detach() if all(iso) else hl if not any(iso) else torch.where(
                per_channel(torch.tensor(iso, device=x.device), c), hl.detach(), hl)
            params = group.params if len(live) == len(group) else {
                n: t[live] for n, t in group.params.items()}
            sv = group.forward_with(params, hs)
            inc = [seeds[j].mode == "incubate" for j in live]  # type: ignore[union-attr]
            alpha = per_channel(torch.tensor([seeds[j].alpha for j in live],  # type: ignore[union-attr]
                                              dtype=x.dtype, device=x.device), c)
            if self.cfg.lifecycle.blend == "add":
                blended = hl + alpha * (sv - hs) if not all(inc) else None
                at_one = hs + (sv - hs) if any(inc) else None
            else:
                blended = hl * (1.0 + alpha * torch.tanh(sv)) if not all(inc) else None
                at_one = hs * (1.0 + torch.tanh(sv)) if any(inc) else None
            if blended is None:
                lane_out = _StraightThrough.apply(hl, at_one)
            elif at_one is None:
                lane_out = blended
            else:
                lane_out = torch.where(per_channel(torch.tensor(inc, device=x.device), c),
                                       _StraightThrough.apply(hl, at_one), blended)
            out = lane_out if channels is None else _put(out, channels, lane_out)
        return out

    # -- an epoch ------------------------------------------------------------------------------
    def run_epoch(self, requests: Sequence[EpochRequest | None]) -> list[EpochReport | None]:
        """One epoch of every lane whose request is not None, as each request asks."""
        germinations: dict[int, Germination] = {}
        with self.clock("bookkeeping"):
            for i, r in enumerate(requests):
                if r is None:
                    continue
                if r.germinate is not None:
                    g = r.germinate
                    germinations[i] = self._germinate(i, g.slot, g.blueprint, g.module_seed)
                self._apply_slots(i, r.slots)
                if r.checkpoint:
                    self._checkpoint(i)
                if r.poison:
                    self._poison(i)
        training = [i for i, r in enumerate(requests) if r is not None and r.train]
        measured: dict[int, EpochReport] = {}
        if training:
            try:
                measured = self._train_and_validate(training)
            except Exception as exc:  # noqa: BLE001 - a fault of every lane that trained
                measured = {i: self._fault_report(exc) for i in training}
        nan = float("nan")
        reports: list[EpochReport | None] = []
        with self.clock("twin"):
            twin_val = self._twin_readings("val", [i for i, r in enumerate(requests)
                                                   if r is not None and r.twin])
        for i, r in enumerate(requests):
            if r is None:
                reports.append(None)
                continue
            m = measured.get(i, EpochReport(nan, 0.0, nan, 0.0, ()))
            reports.append(EpochReport(m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.slots,
                                       m.fault, germinations.get(i), twin_val.get(i, TwinReading())))
        return reports

    def _train_and_validate(self, training: list[int]) -> dict[int, EpochReport]:
        k = self.k
        idle = [i for i in range(k) if i not in training]
        with self.clock("bookkeeping"):
            kept = {i: _read_member(self.hosts, self.opt, i) for i in idle}
        with self.clock("twin"):
            forks = [i for i in training if self.lanes[i].twin_enabled
                     and not self.lanes[i].twin_forked and self._blends(i)]
            for i in forks:
                self._fork_twin(i)
            self._restack_twins()
            twins = [i for i in training if self.lanes[i].twin_forked]
            twins_kept = {r: _read_member(self.twins, self.twin_opt, r)  # type: ignore[arg-type]
                          for r, i in enumerate(self.twin_lanes) if i not in training}
        active = {i: [s for s, seed in enumerate(self.lanes[i].seeds)
                      if seed is not None and seed.mode != "off"] for i in training}
        data, dev = self.data, self.device
        n = data.train_x.shape[0]
        perms = torch.stack([torch.randperm(n, generator=self.lanes[i].generator)
                             if i in active else torch.arange(n) for i in range(k)]).to(dev)
        bs = self.cfg.optimiser.batch_size
        loss_sum = torch.zeros(k, device=dev)
        correct = torch.zeros(k, device=dev, dtype=torch.long)
        host_sq = torch.zeros(k, device=dev)
        seed_sq = {key: torch.zeros(len(g), device=dev) for key, g in self.groups.items()}
        with self.clock("train"):
            self.hosts.train()
            for start in range(0, n, bs):
                xb, yb = gather_batches(data.train_x, data.train_y, perms[:, start:start + bs])
                xb = data.prepare(xb)
                logits = self._forward(xb)
                losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                         reduction="none").view(k, -1)
                self.opt.zero_grad()
                for g in self.groups.values():
                    g.zero_grad()
                losses.mean(dim=1).sum().backward()
                with torch.no_grad():
                    host_sq += sum(p.grad.reshape(k, -1).square().sum(dim=1) for p in self.opt.params)
                    for key, g in self.groups.items():
                        if len(g):
                            seed_sq[key] += sum(t.grad.reshape(len(g), -1).square().sum(dim=1)
                                                for t in g.params.values() if t.grad is not None)
                self.opt.step()
                for g in self.groups.values():
                    if len(g):
                        g.step()
                with torch.no_grad():
                    loss_sum += losses.detach().sum(dim=1)
                    correct += (logits.argmax(dim=2) == yb).sum(dim=1)
                if twins:
                    with self.clock("twin"):
                        self._train_twins(xb, yb)
        with self.clock("bookkeeping"):
            for i, state in kept.items():
                _write_member(self.hosts, self.opt, i, state[0], state[1])
            for r, state in twins_kept.items():
                _write_member(self.twins, self.twin_opt, r, state[0], state[1])  # type: ignore[arg-type]
        with self.clock("validate"):
            val = self._validate(training, "val")
        reports = {}
        host_sq_l, loss_l, correct_l = host_sq.tolist(), (loss_sum / n).tolist(), correct.tolist()
        for i in training:
            ratios = [0.0] * len(self.points)
            host = math.sqrt(host_sq_l[i])
            for s in active[i]:
                seed = self.lanes[i].seeds[s]
                assert seed is not None
                group = self.groups[(s, seed.blueprint)]
                j = group.lanes.index(i)
                sq = float(seed_sq[(s, seed.blueprint)][j]) if j < len(seed_sq[(s, seed.blueprint)]) \
                    else 0.0
                n_seed = sum(t[0].numel() for t in group.params.values())
                sd = math.sqrt(sq)
                if host >= 1e-12 and sd >= 1e-12 and n_seed > 0:
                    r = (sd / math.sqrt(n_seed)) / (host / math.sqrt(self.host_params))
                    ratios[s] = r if math.isfinite(r) else 0.0
            val_loss, val_acc, cf = val[i]
            slots = tuple(SlotMetrics(ratios[s], 0, cf.get(s)) for s in range(len(self.points)))
            reports[i] = EpochReport(loss_l[i], 100.0 * correct_l[i] / n, val_loss, val_acc, slots)
        return reports

    def _validate(self, lanes: Sequence[int], split: str
                  ) -> dict[int, tuple[float, float, dict[int, float]]]:
        """Loss, accuracy (pp) and the counterfactual of each blended seed, per lane in ``lanes``."""
        x_all, y_all = self._split(split)
        k, n = self.k, x_all.shape[0]
        need = {s for i in lanes for s, seed in enumerate(self.lanes[i].seeds)
                if seed is not None and seed.mode == "blend" and seed.alpha > 0.0}
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        ablated = {s: torch.zeros(k, device=self.device, dtype=torch.long) for s in need}
        chunk = max(1, EVAL_CHUNK // k)
        was = self.hosts.training
        self.hosts.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, chunk):
                    x = self.data.prepare(x_all[start:start + chunk])
                    y = y_all[start:start + chunk]
                    m = x.shape[0]
                    xs = x.unsqueeze(1).expand(m, k, *x.shape[1:]).reshape(m, -1, *x.shape[2:])
                    arriving: dict[int, torch.Tensor] = {}
                    logits = self._forward(xs, keep=need, arriving=arriving)
                    loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k),
                                                reduction="none").view(k, m).sum(dim=1)
                    correct += (logits.argmax(dim=2) == y).sum(dim=1)
                    with self.clock("counterfactual"):
                        for s in need:
                            out = self._forward(arriving[s], start=self.points[s] + 1)
                            ablated[s] += (out.argmax(dim=2) == y).sum(dim=1)
        finally:
            self.hosts.train(was)
        losses, hits = (loss_sum / n).tolist(), correct.tolist()
        abl = {s: t.tolist() for s, t in ablated.items()}
        out: dict[int, tuple[float, float, dict[int, float]]] = {}
        for i in lanes:
            acc = 100.0 * hits[i] / n
            cf = {s: acc - 100.0 * abl[s][i] / n for s, seed in enumerate(self.lanes[i].seeds)
                  if s in abl and seed is not None and seed.mode == "blend" and seed.alpha > 0.0}
            out[i] = (losses[i], acc, cf)
        return out

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.data
        return {"val": (d.val_x, d.val_y), "test": (d.test_x, d.test_y),
                "train": (d.train_x, d.train_y)}[split]

    # -- the twins -----------------------------------------------------------------------------
    def _fork_twin(self, i: int) -> None:
        """Start lane ``i``'s twin from its host as it is now (it joins the stack at the next
        :meth:`_restack_twins`).
        """  # noqa: D205
        self._twin_forks[i] = _read_member(self.hosts, self.opt, i)
        self.lanes[i].twin_forked = True

    def _restack_twins(self) -> None:
        """Make :attr:`twins` hold exactly the forked lanes' twins: the new forks join, the
        twins of lanes that were reset or whose twin diverged leave. Only forked lanes' twins
        are stored and trained.
        """  # noqa: D205
        wanted = [i for i in range(self.k) if self.lanes[i].twin_forked]
        if wanted == self.twin_lanes and not self._twin_forks:
            return
        old, old_opt, rows = self.twins, self.twin_opt, {i: r for r, i in enumerate(self.twin_lanes)}
        self.twins = self.twin_opt = None
        self.twin_lanes = wanted
        if wanted:
            o = self.cfg.optimiser
            twins = build_seeded(0, lambda: StackedHosts([self._template] * len(wanted),
                                                         self.memory_format)).to(self.device)
            opt = StackedSGD(list(twins.parameters()), len(wanted), [o.host_lr] * len(wanted),
                             o.host_momentum, o.host_weight_decay)
            for r, i in enumerate(wanted):
                state, bufs = self._twin_forks[i] if i in self._twin_forks else _read_member(
                    old, old_opt, rows[i])  # type: ignore[arg-type]
                _write_member(twins, opt, r, state, bufs)
            self.twins, self.twin_opt = twins, opt
        self._twin_forks.clear()

    def _train_twins(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        twins, opt, lanes = self.twins, self.twin_opt, self.twin_lanes
        assert twins is not None and opt is not None
        if len(lanes) < self.k:
            xb = _take(xb, _channels(lanes, xb.shape[1] // self.k, xb.device))
            yb = yb[lanes]
        logits = twins(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                               reduction="none").view(len(lanes), -1).mean(dim=1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def _twin_readings(self, split: str, lanes: Sequence[int]) -> dict[int, TwinReading]:
        out = {i: TwinReading(None, self.lanes[i].twin_enabled) for i in lanes}
        forked = [i for i in lanes if self.lanes[i].twin_forked]
        if not forked:
            return out
        assert self.twins is not None
        t, rows = self.twins.k, {i: r for r, i in enumerate(self.twin_lanes)}
        x, y = self._split(split)
        x = self.data.prepare(x)
        with torch.inference_mode():
            was = self.twins.training
            self.twins.eval()
            try:
                n = x.shape[0]
                xs = x.unsqueeze(1).expand(n, t, *x.shape[1:]).reshape(n, -1, *x.shape[2:])
                logits = self.twins(xs)
                losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(t),
                                         reduction="none").view(t, n).mean(dim=1).tolist()
                accs = (100.0 * (logits.argmax(dim=2) == y).sum(dim=1) / n).tolist()
            finally:
                self.twins.train(was)
        for i in forked:
            r = rows[i]
            if not math.isfinite(losses[r]):  # a diverged baseline can neither pay nor charge
                self.lanes[i].twin_forked = self.lanes[i].twin_enabled = False
                out[i] = TwinReading(None, False)
            else:
                out[i] = TwinReading(accs[r], True)
        return out

    # -- the governor's checkpoint, faults, the end of a step --------------------------------------
    def _checkpoint(self, i: int) -> None:
        lane = self.lanes[i]
        seeds = []
        for s, seed in enumerate(lane.seeds):
            if seed is None:
                seeds.append(None)
                continue
            group = self.groups[(s, seed.blueprint)]
            j = group.lanes.index(i)
            seeds.append((_Seed(seed.blueprint, seed.mode, seed.alpha, seed.isolate),
                          {n: t[j].detach().clone() for n, t in group.params.items()},
                          {n: t[j].clone() for n, t in group.bufs.items()}))
        lane.checkpoint = {"host": _read_member(self.hosts, self.opt, i), "seeds": seeds}

    def roll_back(self, i: int, plans: Sequence[SlotPlan | None]) -> EpochReport:
        """Restore lane ``i``'s checkpoint, set its slots as planned and describe it."""
        lane = self.lanes[i]
        if lane.checkpoint is None:
            raise RuntimeError(f"roll_back({i}) without a checkpoint")
        state, bufs = lane.checkpoint["host"]
        _write_member(self.hosts, self.opt, i, state, bufs)
        for s, seed in enumerate(lane.seeds):
            if seed is not None:
                self._drop_seed(i, s)
        for s, kept in enumerate(lane.checkpoint["seeds"]):
            if kept is None:
                continue
            seed, params, seed_bufs = kept
            group = self.groups[(s, seed.blueprint)]
            group.add_state(i, params, seed_bufs)
            lane.seeds[s] = _Seed(seed.blueprint, seed.mode, seed.alpha, seed.isolate)
        self._apply_slots(i, plans)
        try:
            val_loss, val_acc, cf = self._validate([i], "val")[i]
            train_loss, train_acc, _ = self._validate([i], "train")[i]
        except Exception as exc:  # noqa: BLE001 - the restored state cannot run either
            return self._fault_report(exc)
        slots = tuple(SlotMetrics(0.0, 0, cf.get(s)) for s in range(len(self.points)))
        return EpochReport(train_loss, train_acc, val_loss, val_acc, slots)

    def settle(self, settlements: Sequence[Settlement | None]) -> list[TestReading | None]:
        """End every lane's step as its settlement asks: slots, checkpoint, test accuracies."""
        with self.clock("bookkeeping"):
            for i, st in enumerate(settlements):
                if st is None:
                    continue
                self._apply_slots(i, st.slots)
                if st.checkpoint:
                    self._checkpoint(i)
        tested = [i for i, st in enumerate(settlements) if st is not None and st.test]
        accs: dict[int, float] = {}
        fault = None
        if tested:
            try:
                with self.clock("test"):
                    accs = {i: v[1] for i, v in self._validate(tested, "test").items()}
            except Exception as exc:  # noqa: BLE001 - a broken model scores 0
                accs, fault = {i: 0.0 for i in tested}, f"{type(exc).__name__}: {exc}"
        with self.clock("twin"):
            twin = self._twin_readings("test", [i for i, st in enumerate(settlements)
                                                if st is not None and st.twin_test])
        return [None if st is None else TestReading(accs.get(i) if st.test else None,
                                                    twin.get(i, TwinReading()),
                                                    fault if i in accs else None)
                for i, st in enumerate(settlements)]

    def _poison(self, i: int) -> None:
        state, bufs = _read_member(self.hosts, self.opt, i)
        for name, t in state.items():
            if t.is_floating_point() and "running" not in name:
                t.fill_(float("nan"))
        _write_member(self.hosts, self.opt, i, state, bufs)

    def _fault_report(self, exc: Exception) -> EpochReport:
        nan = float("nan")
        return EpochReport(nan, 0.0, nan, 0.0, tuple(SlotMetrics() for _ in self.points),
                           f"{type(exc).__name__}: {exc}")


def _channels(lanes: Sequence[int], c: int, device: torch.device) -> torch.Tensor:
    """The stacked channel indices of ``lanes`` (``c`` channels each), in order."""
    return (torch.tensor(lanes, device=device)[:, None] * c
            + torch.arange(c, device=device)).reshape(-1)


def _take(x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``x[:, channels]``, laid out channels-last (the seeds' grouped convolutions' layout)."""
    return x.permute(0, 2, 3, 1).index_select(3, channels).permute(0, 3, 1, 2)


def _put(x: torch.Tensor, channels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``x`` with ``x[:, channels]`` replaced by ``values`` (out of place, differentiable)."""
    return x.permute(0, 2, 3, 1).index_copy(3, channels, values.permute(0, 2, 3, 1)
                                           ).permute(0, 3, 1, 2)


def _member_rows(p: torch.Tensor, k: int, i: int) -> torch.Tensor:
    """Member ``i``'s rows of a stacked tensor (any memory layout), as a view."""
    return p.unflatten(0, (k, p.shape[0] // k))[i]


def _read_member(hosts: StackedHosts, opt: StackedSGD, i: int
                 ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]:
    """Member ``i``'s host state (a CNNHost state dict) and its momentum rows (copies)."""
    bufs = None if opt.bufs is None else [_member_rows(b, hosts.k, i).clone() for b in opt.bufs]
    return hosts.member_state(i), bufs


@torch.no_grad()
def _write_member(hosts: StackedHosts, opt: StackedSGD, i: int, state: dict[str, torch.Tensor],
                  bufs: list[torch.Tensor] | None = None) -> None:
    """Put a CNNHost state dict into member ``i`` (momentum rows: ``bufs``, or zero)."""
    hosts.load_member(i, state)
    if opt.bufs is None and bufs is not None:  # zero momentum is SGD's first step
        opt.bufs = [torch.zeros_like(p) for p in opt.params]
    if opt.bufs is not None:
        for b, new in zip(opt.bufs, bufs or [None] * len(opt.bufs), strict=True):
            rows = _member_rows(b, hosts.k, i)
            rows.copy_(new) if new is not None else rows.zero_()
