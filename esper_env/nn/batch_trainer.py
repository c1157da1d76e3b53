"""BatchedTrainer: the torch side of K episodes at once, one stacked computation per epoch.

It answers what :class:`~esper_env.nn.trainer.Trainer` answers for one episode (``run_epoch``,
``roll_back``, ``settle``, ``facts``, ``seed_costs``), for K *lanes* at once: lane ``i`` is one
episode, and the records it takes and returns are the shared transition's
(:mod:`esper_env.core.episode`), one per lane. The hosts are one
:class:`~esper_env.nn.batched.StackedHosts`, the seeds one
:class:`~esper_env.nn.batched.SeedGroup` per (block, blueprint, width) holding the lanes that
have such a seed after that block, the seedless twins a second stack of the lanes whose twin has
forked; every lane draws its own mini-batch order from its own
generator, so a lane's numbers do not depend on the other lanes beyond floating-point rounding.

Lanes may run different configs (the instances of an instance set): each lane has its own host
widths, injection points, host learning rate, training subset and label noise (drawn from its
episode seed, as the single env draws them), epoch and parameter budgets. Hosts of different
widths are *padded*: the stack is as wide as the widest host, a narrower host's extra channels
hold zero weights, so their activations and gradients are exactly zero and the host computes
what it computes alone. Lanes whose training sets differ in size train in *phases*: each
mini-batch step runs every lane, and the lanes without a batch of that size at that point keep
their weights, momentum and BatchNorm statistics as they were (a masked update).

Scope (refused with a clear error otherwise): CNN tasks whose data do not depend on the episode
seed (``digits``, ``cifar10``; not ``synthetic``), hosts of one depth and pooling, the ``add``
and ``multiply`` blends, no gradient clipping. Isolation is structural here (the seeds
see the detached activation), so ``isolation_violations`` is always 0; the single env measures it.
An exception raised by the stacked computation is a fault of every lane that trained in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from esper_env.config import EsperConfig
from esper_env.core.episode import EpochRequest, Settlement, SlotPlan, TestReading
from esper_env.core.observation import EpisodeFacts
from esper_env.core.state import EpochReport, Germination, SlotMetrics, TwinReading
from esper_env.errors import ConfigError
from esper_env.nn.batched import SeedGroup, StackedHosts, StackedSGD, gather_inputs, per_channel, repeat_each
from esper_env.nn.blueprints import blueprint_param_count, build_blueprint, count_parameters
from esper_env.nn.data import TaskData, episode_training_set
from esper_env.nn.hosts import CNNHost
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
        (cfg.lifecycle.blend in ("add", "multiply"), "blend", cfg.lifecycle.blend,
         "'add' or 'multiply'"),
        (cfg.optimiser.grad_clip is None or math.isinf(cfg.optimiser.grad_clip), "grad_clip",
         cfg.optimiser.grad_clip, "None (no clipping)"),
        (not cfg.host.static_seeds, "static_seeds", cfg.host.static_seeds,
         "() (static references run on EsperEnv)"),
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


EVAL_FLOATS = 2**24
"""Activation floats (64 MiB in float32) at the injection points that an evaluation pass of the
stack may hold (the pass itself holds a few times that, before pooling)."""

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
class _Shape:
    """What a lane's config fixes on the torch side."""

    cfg: EsperConfig
    points: tuple[int, ...]
    channels: tuple[int, ...]
    host_params: int
    widths: tuple[int, ...]

    @property
    def n_blocks(self) -> int:  # noqa: D102
        return len(self.widths)

    @property
    def slot_of_block(self) -> dict[int, int]:  # noqa: D102
        return {p: s for s, p in enumerate(self.points)}


@dataclass
class _Lane:
    generator: torch.Generator
    seeds: list[_Seed | None]
    twin_enabled: bool
    shape: _Shape
    rows: torch.Tensor | None = None
    """The lane's training samples (CPU indices into the shared split), None for all of them."""
    labels: torch.Tensor | None = None
    """Their labels (CPU; noisy where the config asks), None for the split's own."""
    twin_forked: bool = False
    checkpoint: dict | None = None

    @property
    def n_train(self) -> int | None:  # noqa: D102
        return None if self.rows is None else int(self.rows.shape[0])


def _points(cfg: EsperConfig, n_points: int) -> tuple[int, ...]:
    points = cfg.host.injection_points
    if points is None:
        if cfg.host.n_slots > n_points:
            raise ConfigError(f"n_slots={cfg.host.n_slots} is invalid; allowed: 1..{n_points} "
                              f"(the host has {n_points} injection points)")
        points = tuple(range(n_points - cfg.host.n_slots, n_points))
    return tuple(points)


class BatchedTrainer:
    """The training of K episodes (lanes) as one computation (see the module docstring).

    Args:
        cfg: the config of the lanes (optimisers, blend, seeds) and, without ``configs``, of
            their hosts too.
        data: the task's tensors on the device, shared by the lanes.
        k: the number of lanes.
        twin: keep a seedless twin per lane (contribution reward).
        memory_format: the stacks' layout (default ``torch.channels_last``, the faster one for
            grouped convolutions on the CPU).
        configs: every config a lane may be reset to (an instance set's episode configs); the
            stack is as wide as the widest of their hosts. Default: ``[cfg]``.
        static_shapes: every tensor of a mini-batch step keeps its shape and address from step
            to step: each seed group holds K rows (row ``i`` for lane ``i``, empty rows zero and
            masked), the twins K members (the unforked ones masked), and the lanes' seed modes
            and alphas live in tensors updated in place. It computes every group for every lane,
            so on the CPU it is slower; it is what CUDA graphs need, and it is tested against
            the default on the CPU.
        cuda_graphs: True captures each mini-batch step (forward, backward, the SGD steps of
            hosts, seeds and twins) as a CUDA graph and replays it (implies ``static_shapes``; a
            CUDA device only); a :class:`GraphBackend` captures with it instead
            (:class:`EagerGraphBackend` replays eagerly: the bookkeeping, testable on the CPU).
            One graph per batch shape, captured again when a seed group of a new (block,
            blueprint, width) appears; validation runs eagerly. Off by default: not yet
            measured on a GPU.

    Lanes start empty: :meth:`reset_lane` gives lane ``i`` a fresh host before its first epoch.
    """

    def __init__(self, cfg: EsperConfig, data: TaskData, k: int, twin: bool = False,
                 memory_format: torch.memory_format | None = torch.channels_last,
                 configs: Sequence[EsperConfig] | None = None, static_shapes: bool = False,
                 cuda_graphs: bool | GraphBackend = False) -> None:
        configs = list(configs) if configs else [cfg]
        for c in [cfg, *configs]:
            check_batchable(c)
        self.cfg, self.data, self.k, self.twin = cfg, data, k, bool(twin)
        self.device = data.train_x.device
        if cuda_graphs is True and self.device.type != "cuda":
            raise ConfigError(f"cuda_graphs=True needs a CUDA device; the data are on "
                              f"{self.device} (allowed: cuda_graphs=False, or device='cuda')")
        if not isinstance(cuda_graphs, bool | GraphBackend):
            raise ConfigError(f"cuda_graphs={cuda_graphs!r} is invalid; allowed: True, False or "
                              "a GraphBackend")
        self.static = bool(static_shapes or cuda_graphs)
        """Fixed-shape mini-batch steps (``static_shapes``, or implied by ``cuda_graphs``)."""
        backend = CudaGraphBackend() if cuda_graphs is True else cuda_graphs or None
        self._graphs = None if backend is None else _StepGraphs(self, backend)
        self.memory_format = memory_format
        self._shapes: dict[int, _Shape] = {}
        shapes = [self._shape(c) for c in configs]
        widths = _stack_widths([self._host(c) for c in configs])
        # its weights are overwritten by reset_lane; seeded so the global RNG stays untouched
        wide = replace(cfg, host=replace(cfg.host, channels=widths))
        template = self._host(wide)
        self.n_blocks = len(widths)
        self._template = template
        self.widths = widths
        """The stack's block widths: the widest host's, block by block."""
        check_memory(k, lane_bytes(template, cfg.optimiser.batch_size), self.device)
        floats = sum(c * h * w for c, h, w in (p.shape for p in template.injection_points))
        self._eval_chunk = max(1, min(EVAL_CHUNK, EVAL_FLOATS // (k * floats)))
        """Samples per evaluation pass: as many as keep the K lanes' activations at the injection
        points under :data:`EVAL_FLOATS` (the whole digits validation split at K = 64)."""
        self.hosts = build_seeded(0, lambda: StackedHosts([template] * k, memory_format)).to(
            self.device)
        o = cfg.optimiser
        self.opt = StackedSGD(list(self.hosts.parameters()), k, [o.host_lr] * k, o.host_momentum,
                              o.host_weight_decay)
        if self.static:  # zero momentum is SGD's first step; allocated now, never again
            self.opt.bufs = [torch.zeros_like(p) for p in self.opt.params]
        self.twins: StackedHosts | None = None
        """The forked lanes' twins, one member per lane of :attr:`twin_lanes` (in that order)."""
        self.twin_opt: StackedSGD | None = None
        self.twin_lanes: list[int] = []
        self._twin_forks: dict[int, tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]] = {}
        self.seed_lr = float(o.seed_lr if o.seed_lr is not None else data.spec.seed_lr)
        self.groups: dict[tuple[int, str, int], SeedGroup] = {}
        """(block, blueprint, width) -> the seeds of that blueprint after that block."""
        self._seed_state: dict[tuple[int, str, int], _SeedState] = {}
        """With :attr:`static`: each group's per-lane modes and alphas as tensors."""
        self._acc: _Accumulators | None = None
        self._lr = [o.host_lr] * k
        self.n_slots = len(shapes[0].points)
        if any(len(sh.points) != self.n_slots for sh in shapes):
            raise ConfigError(f"the configs have {sorted({len(sh.points) for sh in shapes})} "
                              "slots; allowed: one slot count for every lane")
        self.lanes = [_Lane(torch.Generator(), [None] * len(shapes[0].points), self.twin,
                            shapes[0]) for _ in range(k)]
        self.clock = _Clock()
        """Set ``clock.on = True`` to sum each part's seconds in ``clock.seconds`` (:data:`PARTS`)."""

    # -- lanes ------------------------------------------------------------------------------------
    def _host(self, cfg: EsperConfig) -> CNNHost:
        return build_seeded(0, lambda: build_host(self.data.spec, cfg.host, cfg.host.bn_momentum))

    def _shape(self, cfg: EsperConfig) -> _Shape:
        key = id(cfg)
        if key not in self._shapes or self._shapes[key].cfg is not cfg:
            host = self._host(cfg)
            points = _points(cfg, len(host.injection_points))
            self._shapes[key] = _Shape(cfg, points,
                                       tuple(host.injection_points[p].channels for p in points),
                                       count_parameters(host), tuple(host.channels))
        return self._shapes[key]

    def reset_lane(self, i: int, model_seed: int, data_seed: int, cfg: EsperConfig | None = None,
                   episode_seed: int = 0) -> None:
        """Give lane ``i`` a fresh episode of ``cfg`` (default: the trainer's): the host a single
        env builds from ``model_seed``, no seeds, no twin, no checkpoint, the training set the
        single env draws from ``episode_seed`` (``train_fraction``, ``label_noise``) and the data
        order of ``data_seed``.
        """  # noqa: D205
        cfg = cfg or self.cfg
        with self.clock("bookkeeping"):
            shape = self.check_fits(cfg)
            host = build_seeded(model_seed, lambda: build_host(self.data.spec, cfg.host,
                                                               cfg.host.bn_momentum))
            _write_member(self.hosts, self.opt, i, host.state_dict())
            for s, seed in enumerate(self.lanes[i].seeds):
                if seed is not None:
                    self._drop_seed(i, s)
            lane = _Lane(torch.Generator().manual_seed(data_seed), [None] * len(shape.points),
                         self.twin, shape)
            drawn = episode_training_set(self.data.train_y.cpu().numpy(), self.data.spec.n_classes,
                                         cfg.task.train_fraction, cfg.task.label_noise,
                                         episode_seed)
            if drawn is not None:
                lane.rows, lane.labels = torch.from_numpy(drawn[0]), torch.from_numpy(drawn[1])
            self.lanes[i] = lane
            if self._lr[i] != cfg.optimiser.host_lr:
                self._lr[i] = cfg.optimiser.host_lr
                self.opt.set_lr(self._lr)

    def check_fits(self, cfg: EsperConfig) -> _Shape:
        """Raise ConfigError unless a lane can run ``cfg`` (its host fits the stack)."""
        check_batchable(cfg)
        shape = self._shape(cfg)
        if shape.n_blocks != self.n_blocks or len(shape.points) != self.n_slots or any(
                c > w for c, w in zip(shape.widths, self.widths, strict=True)):
            raise ConfigError(f"host_channels={shape.widths} with {len(shape.points)} slot(s) "
                              f"does not fit this batch; allowed: {self.n_blocks} blocks of at "
                              f"most {self.widths} channels, {self.n_slots} slot(s) (pass every "
                              "config to configs=)")
        return shape

    def facts(self, i: int = 0) -> EpisodeFacts:
        """Lane ``i``'s episode constants as observed: host size and learning rate, data, slots."""
        shape = self.lanes[i].shape
        c = shape.cfg
        return EpisodeFacts(
            host_params=shape.host_params, host_lr=c.optimiser.host_lr,
            train_fraction=c.task.train_fraction, label_noise=c.task.label_noise,
            param_budget=c.lifecycle.param_budget, slot_channels=shape.channels,
            slot_depths=tuple((q + 1) / shape.n_blocks for q in shape.points))

    def seed_costs(self, blueprints: Sequence[str], i: int = 0) -> tuple[tuple[int, ...], ...]:
        """``costs[s][b]``: parameters blueprint ``b`` would add at lane ``i``'s slot ``s``."""
        return tuple(tuple(blueprint_param_count("cnn", b, c) for b in blueprints)
                     for c in self.lanes[i].shape.channels)

    # -- seeds ------------------------------------------------------------------------------------
    def _key(self, i: int, slot: int, blueprint: str) -> tuple[int, str, int]:
        shape = self.lanes[i].shape
        return (shape.points[slot], blueprint, shape.channels[slot])

    def _germinate(self, i: int, slot: int, blueprint: str, module_seed: int) -> Germination:
        c = self.lanes[i].shape.channels[slot]
        seed = build_seeded(module_seed, lambda: build_blueprint("cnn", blueprint, c)).to(
            self.device)
        size = self.hosts.sizes[self.lanes[i].shape.points[slot]]
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
        key = self._key(i, slot, blueprint)
        if key not in self.groups:
            self.groups[key] = SeedGroup(seed, self.seed_lr, self.cfg.optimiser.seed_momentum,
                                         capacity=self.k if self.static else None)
            if self.static:
                self._seed_state[key] = _SeedState.empty(self.k, key[2], self.widths[key[0]],
                                                         self.device)
        self.groups[key].add(i, seed)
        self.lanes[i].seeds[slot] = _Seed(blueprint)
        return Germination(count_parameters(seed), True)

    def _drop_seed(self, i: int, slot: int) -> None:
        seed = self.lanes[i].seeds[slot]
        assert seed is not None
        self.groups[self._key(i, slot, seed.blueprint)].remove(i)
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
        activation after each block in ``keep``, before its seeds, is put into ``arriving``.
        """  # noqa: D205
        hosts = self.hosts
        if hosts.memory_format is not None:
            x = x.contiguous(memory_format=hosts.memory_format)
        for b in range(start, self.n_blocks):
            x = hosts.block(b, x)
            if b in keep and arriving is not None:
                arriving[b] = x
            x = self._seeds_after(b, x)
        return hosts.head(x)

    def _seeds_after(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` (after ``block``) with every lane's seed at that block applied."""
        if self.static:
            return self._seeds_after_static(block, x)
        out = x
        for (where, _, c), group in self.groups.items():
            if where != block or not len(group):
                continue
            seeds = [self.lanes[i].seeds[self.lanes[i].shape.slot_of_block[block]]
                     for i in group.lanes]
            live = [j for j, seed in enumerate(seeds) if seed is not None and (
                seed.mode == "incubate" or (seed.mode == "blend" and seed.alpha > 0.0))]
            if not live:
                continue
            lanes = [group.lanes[j] for j in live]
            width = x.shape[1] // self.k
            every = lanes == list(range(self.k)) and c == width
            channels = None if every else _channels(lanes, c, width, x.device)
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
            blended, at_one = _blend(self.cfg.lifecycle.blend, hl, hs, sv, alpha,
                                     blended=not all(inc), at_one=any(inc))
            if blended is None:
                lane_out = _StraightThrough.apply(hl, at_one)
            elif at_one is None:
                lane_out = blended
            else:
                lane_out = torch.where(per_channel(torch.tensor(inc, device=x.device), c),
                                       _StraightThrough.apply(hl, at_one), blended)
            out = lane_out if channels is None else _put(out, channels, lane_out)
        return out

    def _seeds_after_static(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_seeds_after` with fixed shapes: every group on every lane, masked by the
        tensors of :meth:`_refresh_seed_state` (the same sums per lane).
        """  # noqa: D205
        out = x
        for key, group in self.groups.items():
            if key[0] != block:
                continue
            st, c = self._seed_state[key], key[2]
            hl = x if st.channels is None else _take(x, st.channels)
            hs = torch.where(per_channel(st.isolate, c), hl.detach(), hl)
            sv = group.forward_with(group.params, hs)
            alpha = per_channel(st.alpha, c)
            blended, at_one = _blend(self.cfg.lifecycle.blend, hl, hs, sv, alpha)
            lane_out = torch.where(per_channel(st.incubate, c), _StraightThrough.apply(hl, at_one),
                                   blended)
            # the other lanes keep what earlier groups at this block made (a lane has one seed
            # per block, so the groups' live lanes are disjoint)
            prev = out if st.channels is None else _take(out, st.channels)
            lane_out = torch.where(per_channel(st.live, c), lane_out, prev)
            out = lane_out if st.channels is None else _put(out, st.channels, lane_out)
        return out

    def _refresh_seed_state(self) -> None:
        """With :attr:`static`: write each group's per-lane modes and alphas into its tensors
        (in place) from the lanes' records.
        """  # noqa: D205
        for key, group in self.groups.items():
            live, inc, iso, alpha = [], [], [], []
            for i in range(self.k):
                lane = self.lanes[i]
                slot = lane.shape.slot_of_block.get(key[0])
                seed = lane.seeds[slot] if slot is not None and group.rows[i] is not None else None
                on = seed is not None and (seed.mode == "incubate" or (
                    seed.mode == "blend" and seed.alpha > 0.0))
                live.append(on)
                inc.append(on and seed.mode == "incubate")  # type: ignore[union-attr]
                iso.append(seed.isolate if on else True)  # type: ignore[union-attr]
                alpha.append(seed.alpha if on else 0.0)  # type: ignore[union-attr]
            self._seed_state[key].write(live, inc, iso, alpha)

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
            self._checkpoint([i for i, r in enumerate(requests) if r is not None and r.checkpoint])
            for i, r in enumerate(requests):
                if r is not None and r.poison:
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
        with self.clock("twin"):
            forks = [i for i in training if self.lanes[i].twin_enabled
                     and not self.lanes[i].twin_forked and self._blends(i)]
            for i in forks:
                self._fork_twin(i)
            self._restack_twins()
        active = {i: [s for s, seed in enumerate(self.lanes[i].seeds)
                      if seed is not None and seed.mode != "off"] for i in training}
        data, dev = self.data, self.device
        bs = self.cfg.optimiser.batch_size
        with self.clock("bookkeeping"):
            sizes, orders, labels = self._orders(training)
            if self.static:
                self._refresh_seed_state()
            acc = self._accumulators()
        with self.clock("train"):
            self.hosts.train()
            everyone = torch.ones(k, dtype=torch.bool, device=dev) if self.static else None
            for start, size, lanes in _phases(sizes, bs):
                mask = everyone if len(lanes) == k else torch.zeros(
                    k, dtype=torch.bool, device=dev).index_fill_(0, torch.tensor(lanes, device=dev),
                                                                 True)
                xb = data.prepare(gather_inputs(data.train_x, orders[:, start:start + size]))
                yb = labels[:, start:start + size]
                if self._graphs is not None:
                    self._graphs.run(xb, yb, mask)  # type: ignore[arg-type]
                else:
                    self._minibatch(xb, yb, mask, acc)
        seed_sq = acc.seed_sq
        host_sq, loss_sum, correct = acc.host_sq, acc.loss_sum, acc.correct
        with self.clock("validate"):
            val = self._validate(training, "val")
        reports = {}
        host_sq_l, loss_l, correct_l = host_sq.tolist(), loss_sum.tolist(), correct.tolist()
        for i in training:
            shape = self.lanes[i].shape
            ratios = [0.0] * len(shape.points)
            host = math.sqrt(host_sq_l[i])
            for s in active[i]:
                seed = self.lanes[i].seeds[s]
                assert seed is not None
                key = self._key(i, s, seed.blueprint)
                group = self.groups[key]
                j = group.row(i)
                sq = float(seed_sq[key][j]) if key in seed_sq and j < len(seed_sq[key]) else 0.0
                n_seed = sum(t[0].numel() for t in group.params.values())
                sd = math.sqrt(sq)
                if host >= 1e-12 and sd >= 1e-12 and n_seed > 0:
                    r = (sd / math.sqrt(n_seed)) / (host / math.sqrt(shape.host_params))
                    ratios[s] = r if math.isfinite(r) else 0.0
            val_loss, val_acc, cf = val[i]
            slots = tuple(SlotMetrics(ratios[s], 0, cf.get(s)) for s in range(len(shape.points)))
            n = sizes[i]
            reports[i] = EpochReport(loss_l[i] / n, 100.0 * correct_l[i] / n, val_loss, val_acc,
                                     slots)
        return reports

    def _accumulators(self) -> _Accumulators:
        """The epoch's sums, zeroed (with :attr:`static`: the same tensors every epoch)."""
        dev, k = self.device, self.k
        rows = {key: g.n_rows for key, g in self.groups.items()}
        if not self.static or self._acc is None:
            self._acc = _Accumulators(torch.zeros(k, device=dev),
                                      torch.zeros(k, device=dev, dtype=torch.long),
                                      torch.zeros(k, device=dev), {})
        acc = self._acc
        with torch.no_grad():
            for t in (acc.loss_sum, acc.correct, acc.host_sq, *acc.seed_sq.values()):
                t.zero_()
        for key, n in rows.items():
            if key not in acc.seed_sq:
                acc.seed_sq[key] = torch.zeros(n, device=dev)
        return acc

    def _state_tensors(self) -> list[torch.Tensor]:
        """Every tensor a mini-batch step changes: weights, statistics, momentum (hosts, seed
        groups, twins) and the epoch's sums.
        """  # noqa: D205
        out = [*self.hosts.parameters(), *self.hosts.buffers(), *(self.opt.bufs or [])]
        for g in self.groups.values():
            out += [*g.params.values(), *g.bufs.values()]
        if self.twins is not None and self.twin_opt is not None:
            out += [*self.twins.parameters(), *self.twins.buffers(), *(self.twin_opt.bufs or [])]
        if self._acc is not None:
            out += self._acc.tensors()
        return out

    def _minibatch(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor | None,
                   acc: _Accumulators) -> None:
        """One mini-batch step of every lane (only where ``mask``), its sums added to ``acc``:
        forward, backward, the SGD steps of hosts, seeds and twins. With :attr:`static` it
        neither syncs with the device nor allocates what outlives it (a CUDA graph captures it).
        """  # noqa: D205
        k = self.k
        kept = None if mask is None else _running_stats(self.hosts)
        logits = self._forward(xb)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                 reduction="none").view(k, -1)
        per_lane = losses.mean(dim=1)
        if mask is not None:
            per_lane = torch.where(mask, per_lane, 0.0)
        self.opt.zero_grad()
        for g in self.groups.values():
            g.zero_grad()
        per_lane.sum().backward()
        if kept is not None:  # after backward: BatchNorm's backward reads them
            _keep_running_stats(self.hosts, kept, mask)  # type: ignore[arg-type]
        with torch.no_grad():
            sq = sum(p.grad.reshape(k, -1).square().sum(dim=1) for p in self.opt.params)
            hits = (logits.argmax(dim=2) == yb).sum(dim=1)
            lsum = losses.detach().sum(dim=1)
            if mask is not None:
                sq, hits, lsum = (torch.where(mask, v, 0) for v in (sq, hits, lsum))
            acc.host_sq += sq
            acc.loss_sum += lsum
            acc.correct += hits
            for key, g in self.groups.items():
                if self.static or len(g):
                    gsq = sum(t.grad.reshape(g.n_rows, -1).square().sum(dim=1)
                              for t in g.params.values() if t.grad is not None)
                    if mask is not None:
                        gsq = torch.where(mask if self.static else mask[g.lanes], gsq, 0.0)
                    acc.seed_sq[key] += gsq
        self.opt.step(mask)
        for key, g in self.groups.items():
            if self.static:  # a member steps when it took part, as a single env's seed does
                live = self._seed_state[key].live
                g.step(live if mask is None else live & mask)
            elif len(g):
                g.step(None if mask is None else mask[g.lanes])
        if self.twins is not None:
            with self.clock("twin"):
                self._train_twins(xb, yb, mask)

    def _orders(self, training: Sequence[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Each lane's training-set size and this epoch's sample order (indices into the shared
        split) and labels, ``(K, n_max)`` (zero past a lane's size; lanes not training: size 0).

        A lane's order is ``torch.randperm(n, generator=...)`` of its own training set, the draw
        a single :class:`~esper_env.nn.trainer.Trainer` makes.
        """  # noqa: D205
        data, k = self.data, self.k
        n_all = data.train_x.shape[0]
        sizes = [0] * k
        for i in training:
            sizes[i] = self.lanes[i].n_train or n_all
        n_max = max(sizes)
        orders = torch.zeros(k, n_max, dtype=torch.long)
        labels = torch.zeros(k, n_max, dtype=data.train_y.dtype)
        y_all = data.train_y.cpu()
        for i in training:
            lane, n = self.lanes[i], sizes[i]
            perm = torch.randperm(n, generator=lane.generator)
            if lane.rows is None:
                orders[i, :n], labels[i, :n] = perm, y_all[perm]
            else:
                assert lane.labels is not None
                orders[i, :n], labels[i, :n] = lane.rows[perm], lane.labels[perm]
        return sizes, orders.to(self.device), labels.to(self.device)

    def _validate(self, lanes: Sequence[int], split: str,
                  samples: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> dict[int, tuple[float, float, dict[int, float]]]:
        """Loss, accuracy (pp) and the counterfactual of each blended seed, per lane in
        ``lanes``, on ``split`` (or on ``samples``, inputs and labels).
        """  # noqa: D205
        x_all, y_all = samples if samples is not None else self._split(split)
        k, n = self.k, x_all.shape[0]
        if self.static:
            self._refresh_seed_state()
        need = {self.lanes[i].shape.points[s] for i in lanes
                for s, seed in enumerate(self.lanes[i].seeds)
                if seed is not None and seed.mode == "blend" and seed.alpha > 0.0}
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        ablated = {b: torch.zeros(k, device=self.device, dtype=torch.long) for b in need}
        chunk = self._eval_chunk
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
                        for b in need:
                            out = self._forward(arriving[b], start=b + 1)
                            ablated[b] += (out.argmax(dim=2) == y).sum(dim=1)
        finally:
            self.hosts.train(was)
        losses, hits = (loss_sum / n).tolist(), correct.tolist()
        abl = {b: t.tolist() for b, t in ablated.items()}
        out: dict[int, tuple[float, float, dict[int, float]]] = {}
        for i in lanes:
            acc = 100.0 * hits[i] / n
            points = self.lanes[i].shape.points
            cf = {s: acc - 100.0 * abl[points[s]][i] / n
                  for s, seed in enumerate(self.lanes[i].seeds)
                  if points[s] in abl and seed is not None and seed.mode == "blend"
                  and seed.alpha > 0.0}
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
        are stored and trained (with :attr:`static`: K members, the unforked ones masked).
        """  # noqa: D205
        wanted = [i for i in range(self.k) if self.lanes[i].twin_forked]
        if wanted == self.twin_lanes and not self._twin_forks:
            return
        if self.static:
            self._restack_twins_static(wanted)
            return
        old, old_opt, rows = self.twins, self.twin_opt, {i: r for r, i in enumerate(self.twin_lanes)}
        self.twins = self.twin_opt = None
        self.twin_lanes = wanted
        if wanted:
            o = self.cfg.optimiser
            twins = build_seeded(0, lambda: StackedHosts([self._template] * len(wanted),
                                                         self.memory_format)).to(self.device)
            opt = StackedSGD(list(twins.parameters()), len(wanted), [self._lr[i] for i in wanted],
                             o.host_momentum, o.host_weight_decay)
            for r, i in enumerate(wanted):
                state, bufs = self._twin_forks[i] if i in self._twin_forks else _read_member(
                    old, old_opt, rows[i])  # type: ignore[arg-type]
                _write_member(twins, opt, r, state, bufs)
            self.twins, self.twin_opt = twins, opt
        self._twin_forks.clear()

    def _restack_twins_static(self, wanted: list[int]) -> None:
        """:meth:`_restack_twins` with fixed shapes: one stack of K twins made at the first fork
        and kept; a fork writes its lane's member, :attr:`_twin_mask` says which are forked.
        """  # noqa: D205
        if self.twins is None:
            o = self.cfg.optimiser
            self.twins = build_seeded(0, lambda: StackedHosts([self._template] * self.k,
                                                              self.memory_format)).to(self.device)
            self.twin_opt = StackedSGD(list(self.twins.parameters()), self.k, self._lr,
                                       o.host_momentum, o.host_weight_decay)
            self.twin_opt.bufs = [torch.zeros_like(p) for p in self.twin_opt.params]
            self._twin_mask = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        assert self.twin_opt is not None
        self.twin_opt.set_lr(self._lr)
        for i, (state, bufs) in self._twin_forks.items():
            _write_member(self.twins, self.twin_opt, i, state, bufs)
        self._twin_forks.clear()
        self.twin_lanes = wanted
        self._twin_mask.copy_(torch.tensor([i in wanted for i in range(self.k)],
                                           device=self.device))

    def _twin_row(self) -> dict[int, int]:
        """Lane -> its twin's member in :attr:`twins`."""
        return {i: i if self.static else r for r, i in enumerate(self.twin_lanes)}

    def _train_twins(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor | None) -> None:
        """One SGD step of the twins on their lanes' batch (only where ``mask``, if given)."""
        twins, opt, lanes = self.twins, self.twin_opt, self.twin_lanes
        assert twins is not None and opt is not None
        if self.static:
            mask = self._twin_mask if mask is None else self._twin_mask & mask
        else:
            if len(lanes) < self.k:
                c = xb.shape[1] // self.k
                xb = _take(xb, _channels(lanes, c, c, xb.device))
                yb = yb[lanes]
                mask = None if mask is None else mask[lanes]
            if mask is not None and bool(mask.all()):
                mask = None
        kept = None if mask is None else _running_stats(twins)
        logits = twins(xb)
        per_lane = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                   reduction="none").view(twins.k, -1).mean(dim=1)
        if mask is not None:
            per_lane = torch.where(mask, per_lane, 0.0)
        opt.zero_grad()
        per_lane.sum().backward()
        if kept is not None:
            _keep_running_stats(twins, kept, mask)  # type: ignore[arg-type]
        opt.step(mask)

    def _twin_readings(self, split: str, lanes: Sequence[int]) -> dict[int, TwinReading]:
        out = {i: TwinReading(None, self.lanes[i].twin_enabled) for i in lanes}
        forked = [i for i in lanes if self.lanes[i].twin_forked]
        if not forked:
            return out
        assert self.twins is not None
        t, rows = self.twins.k, self._twin_row()
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
                accs = [100.0 * c / n for c in (logits.argmax(dim=2) == y).sum(dim=1).tolist()]
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
    def _checkpoint(self, lanes: Sequence[int]) -> None:
        """The governor's checkpoint of each lane of ``lanes``: one copy of the stacks for all
        of them (a lane keeps a reference to it and its row), not one copy per lane.
        """  # noqa: D205
        if not lanes:
            return
        host = _Snapshot.of(self.hosts, self.opt)
        groups: dict[tuple[int, str, int], tuple[dict, dict]] = {}
        for i in lanes:
            lane = self.lanes[i]
            seeds = []
            for s, seed in enumerate(lane.seeds):
                if seed is None:
                    seeds.append(None)
                    continue
                key = self._key(i, s, seed.blueprint)
                if key not in groups:
                    g = self.groups[key]
                    groups[key] = ({n: t.detach().clone() for n, t in g.params.items()},
                                   {n: t.clone() for n, t in g.bufs.items()})
                params, bufs = groups[key]
                seeds.append((_Seed(seed.blueprint, seed.mode, seed.alpha, seed.isolate),
                              params, bufs, self.groups[key].row(i)))
            lane.checkpoint = {"host": host, "seeds": seeds}

    def roll_back(self, i: int, plans: Sequence[SlotPlan | None]) -> EpochReport:
        """Restore lane ``i``'s checkpoint, set its slots as planned and describe it."""
        lane = self.lanes[i]
        if lane.checkpoint is None:
            raise RuntimeError(f"roll_back({i}) without a checkpoint")
        lane.checkpoint["host"].restore(self.hosts, self.opt, i)
        for s, seed in enumerate(lane.seeds):
            if seed is not None:
                self._drop_seed(i, s)
        for s, kept in enumerate(lane.checkpoint["seeds"]):
            if kept is None:
                continue
            seed, params, seed_bufs, j = kept
            group = self.groups[self._key(i, s, seed.blueprint)]
            group.add_state(i, {n: t[j] for n, t in params.items()},
                            {n: t[j] for n, t in seed_bufs.items()})
            lane.seeds[s] = _Seed(seed.blueprint, seed.mode, seed.alpha, seed.isolate)
        self._apply_slots(i, plans)
        try:
            val_loss, val_acc, cf = self._validate([i], "val")[i]
            d = self.data
            own = None if lane.rows is None else (d.train_x[lane.rows.to(self.device)],
                                                  lane.labels.to(self.device))  # type: ignore[union-attr]
            train_loss, train_acc, _ = self._validate([i], "train", own)[i]
        except Exception as exc:  # noqa: BLE001 - the restored state cannot run either
            return self._fault_report(exc)
        slots = tuple(SlotMetrics(0.0, 0, cf.get(s)) for s in range(self.n_slots))
        return EpochReport(train_loss, train_acc, val_loss, val_acc, slots)

    def settle(self, settlements: Sequence[Settlement | None]) -> list[TestReading | None]:
        """End every lane's step as its settlement asks: slots, checkpoint, test accuracies."""
        with self.clock("bookkeeping"):
            for i, st in enumerate(settlements):
                if st is None:
                    continue
                self._apply_slots(i, st.slots)
            self._checkpoint([i for i, st in enumerate(settlements)
                              if st is not None and st.checkpoint])
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
        return EpochReport(nan, 0.0, nan, 0.0, tuple(SlotMetrics() for _ in range(self.n_slots)),
                           f"{type(exc).__name__}: {exc}")


@dataclass
class _Accumulators:
    """An epoch's sums per lane (and per seed-group row)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    host_sq: torch.Tensor
    seed_sq: dict[tuple[int, str, int], torch.Tensor]

    def tensors(self) -> list[torch.Tensor]:  # noqa: D102
        return [self.loss_sum, self.correct, self.host_sq, *self.seed_sq.values()]


@dataclass
class _SeedState:
    """One seed group's per-lane modes and alpha as ``(K,)`` tensors (static shapes), and the
    stacked channels its members read (None: every channel of the block).
    """  # noqa: D205

    live: torch.Tensor
    incubate: torch.Tensor
    isolate: torch.Tensor
    alpha: torch.Tensor
    channels: torch.Tensor | None

    @classmethod
    def empty(cls, k: int, c: int, width: int, device: torch.device) -> _SeedState:  # noqa: D102
        def flags() -> torch.Tensor:
            return torch.zeros(k, dtype=torch.bool, device=device)
        return cls(flags(), flags(), flags().logical_not_(), torch.zeros(k, device=device),
                   None if c == width else _channels(range(k), c, width, device))

    def write(self, live: list[bool], incubate: list[bool], isolate: list[bool],
              alpha: list[float]) -> None:
        """Overwrite the tensors in place (a captured CUDA graph reads these addresses)."""
        for t, v in ((self.live, live), (self.incubate, incubate), (self.isolate, isolate),
                     (self.alpha, alpha)):
            t.copy_(torch.tensor(v, dtype=t.dtype))


class GraphBackend:
    """How :class:`BatchedTrainer` captures and replays a mini-batch step (``cuda_graphs``).

    :meth:`capture` takes the step as a function of its static inputs and returns what replays
    it; :meth:`warm_up` runs it the times a backend needs before a capture.
    """

    warmups = 0

    def warm_up(self, step: Callable[[], None]) -> None:  # noqa: D102
        for _ in range(self.warmups):
            step()

    def capture(self, step: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        raise NotImplementedError


class CudaGraphBackend(GraphBackend):
    """``torch.cuda.CUDAGraph``: warm-up on a side stream (as PyTorch's whole-network capture
    example does), one capture per shape, replays on the current stream.
    """  # noqa: D205

    warmups = 3

    def warm_up(self, step: Callable[[], None]) -> None:  # noqa: D102
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            super().warm_up(step)
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, step: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return graph.replay


class EagerGraphBackend(GraphBackend):
    """Replays a captured step by calling it: graph mode's bookkeeping (static inputs, warm-up
    that leaves no trace, capture again when the seed groups change) without CUDA, for tests.
    """  # noqa: D205

    warmups = 2

    def __init__(self) -> None:
        self.captures = 0

    def capture(self, step: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        self.captures += 1
        return step


class _StepGraphs:
    """The captured mini-batch steps of a trainer, one per (batch shape, seed groups, twins)."""

    def __init__(self, trainer: BatchedTrainer, backend: GraphBackend) -> None:
        self.trainer, self.backend = trainer, backend
        self.graphs: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                       Callable[[], None]]] = {}
        self._groups: tuple = ()

    def key(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple:
        """What a captured step depends on beyond its inputs' values."""
        t = self.trainer
        return (tuple(xb.shape), tuple(yb.shape), tuple(t.groups), t.twins is not None)

    def run(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor) -> None:
        """One mini-batch step on ``xb``, ``yb`` where ``mask``, replayed (captured first)."""
        t = self.trainer
        groups = tuple(t.groups)
        if groups != self._groups:  # a new seed group: every graph would miss it
            self.graphs.clear()
            self._groups = groups
        key = self.key(xb, yb)
        if key not in self.graphs:
            self.graphs[key] = self._capture(xb, yb, mask)
        sx, sy, sm, replay = self.graphs[key]
        sx.copy_(xb)
        sy.copy_(yb)
        sm.copy_(mask)
        replay()

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[], None]]:
        t = self.trainer
        sx, sy, sm = xb.clone(), yb.clone(), mask.clone()
        acc = t._acc
        assert acc is not None

        def step() -> None:
            t._minibatch(sx, sy, sm, acc)

        state = t._state_tensors()
        with torch.no_grad():
            saved = [v.detach().clone() for v in state]
        self.backend.warm_up(step)
        with torch.no_grad():  # the warm-up steps leave no trace
            for v, kept in zip(state, saved, strict=True):
                v.copy_(kept)
        return sx, sy, sm, self.backend.capture(step)


def _blend(blend: str, hl: torch.Tensor, hs: torch.Tensor, sv: torch.Tensor, alpha: torch.Tensor,
           blended: bool = True, at_one: bool = True
           ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A slot's output blended at ``alpha`` and at alpha 1 (the incubation value), each only if
    asked: ``add`` is ``h + alpha * (seed - h)``, ``multiply`` is ``h * (1 + alpha * tanh(seed))``.
    """  # noqa: D205
    if blend == "add":
        return (hl + alpha * (sv - hs) if blended else None, hs + (sv - hs) if at_one else None)
    gate = torch.tanh(sv)
    return (hl * (1.0 + alpha * gate) if blended else None, hs * (1.0 + gate) if at_one else None)


def _channels(lanes: Sequence[int], c: int, width: int, device: torch.device) -> torch.Tensor:
    """The stacked channel indices of the first ``c`` of each lane's ``width`` channels."""
    return (torch.tensor(lanes, device=device)[:, None] * width
            + torch.arange(c, device=device)).reshape(-1)


def _take(x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``x[:, channels]``, laid out channels-last (the seeds' grouped convolutions' layout)."""
    return x.permute(0, 2, 3, 1).index_select(3, channels).permute(0, 3, 1, 2)


def _put(x: torch.Tensor, channels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``x`` with ``x[:, channels]`` replaced by ``values`` (out of place, differentiable)."""
    return x.permute(0, 2, 3, 1).index_copy(3, channels, values.permute(0, 2, 3, 1)
                                           ).permute(0, 3, 1, 2)


@dataclass
class _Snapshot:
    """A copy of a stack's weights, BatchNorm statistics and momentum, every member at once."""

    tensors: list[torch.Tensor]
    bufs: list[torch.Tensor] | None

    @staticmethod
    def _live(hosts: StackedHosts) -> list[torch.Tensor]:
        return [*hosts.parameters(), *(b for n, b in hosts.named_buffers()
                                       if "num_batches" not in n)]

    @classmethod
    def of(cls, hosts: StackedHosts, opt: StackedSGD) -> _Snapshot:  # noqa: D102
        with torch.no_grad():
            return cls([t.detach().clone() for t in cls._live(hosts)],
                       None if opt.bufs is None else [b.clone() for b in opt.bufs])

    @torch.no_grad()
    def restore(self, hosts: StackedHosts, opt: StackedSGD, i: int) -> None:
        """Put member ``i`` back as it was (its momentum: as it was, or zero)."""
        k = hosts.k
        for live, kept in zip(self._live(hosts), self.tensors, strict=True):
            _member_rows(live, k, i).copy_(_member_rows(kept, k, i))
        if opt.bufs is None and self.bufs is not None:
            opt.bufs = [torch.zeros_like(p) for p in opt.params]
        if opt.bufs is not None:
            for live, kept in zip(opt.bufs, self.bufs or [None] * len(opt.bufs), strict=True):
                rows = _member_rows(live, k, i)
                rows.copy_(_member_rows(kept, k, i)) if kept is not None else rows.zero_()


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


def _stack_widths(hosts: Sequence[CNNHost]) -> tuple[int, ...]:
    """The widths of a stack that holds every host of ``hosts`` (the widest, block by block);
    ConfigError where they differ in depth or pooling.
    """  # noqa: D205
    first = hosts[0]
    for h in hosts[1:]:
        same = len(h.blocks) == len(first.blocks) and all(
            isinstance(a.pool, torch.nn.MaxPool2d) == isinstance(b.pool, torch.nn.MaxPool2d)
            for a, b in zip(h.blocks, first.blocks, strict=True))
        if not same:
            raise ConfigError(f"host_channels={tuple(h.channels)} is not batchable with "
                              f"{tuple(first.channels)}; the batched engine supports: hosts of "
                              "one depth and pooling in one batch")
    return tuple(max(col) for col in zip(*(h.channels for h in hosts), strict=True))


def _phases(sizes: Sequence[int], batch_size: int) -> list[tuple[int, int, list[int]]]:
    """The mini-batch steps of one epoch of lanes with ``sizes[i]`` training samples each:
    ``(start, size, lanes)``, the lanes whose batch at ``start`` has ``size`` samples (each lane
    takes its chunks of ``batch_size`` in order; lanes of size 0 take none).
    """  # noqa: D205
    phases = []
    for start in range(0, max(sizes, default=0), batch_size):
        by_size: dict[int, list[int]] = {}
        for i, n in enumerate(sizes):
            if n > start:
                by_size.setdefault(min(batch_size, n - start), []).append(i)
        phases.extend((start, b, lanes) for b, lanes in sorted(by_size.items(), reverse=True))
    return phases


def _running_stats(hosts: StackedHosts) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(n.running_mean.clone(), n.running_var.clone()) for n in hosts.norms]


def _keep_running_stats(hosts: StackedHosts, kept: list[tuple[torch.Tensor, torch.Tensor]],
                        mask: torch.Tensor) -> None:
    """Put back the BatchNorm statistics of the members outside ``mask`` (a ``(K,)`` bool)."""
    with torch.no_grad():
        for norm, (mean, var) in zip(hosts.norms, kept, strict=True):
            rows = repeat_each(mask, norm.num_features // hosts.k)
            norm.running_mean.copy_(torch.where(rows, norm.running_mean, mean))
            norm.running_var.copy_(torch.where(rows, norm.running_var, var))
