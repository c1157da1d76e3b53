"""Trainer: owns the model, its optimisers, the episode's data-order generator and checkpoint.

It is the torch side of an episode. The episode asks it for three things, each as a plain record
from :mod:`esper_env.core.episode`: :meth:`Trainer.run_epoch` (germinate a requested seed, set
every slot's mode, train one epoch, validate with per-slot counterfactuals, validate the twin),
:meth:`Trainer.roll_back` (restore the governor's checkpoint, the whole model and its optimisers,
and validate it) and :meth:`Trainer.settle` (the slots' modes after the lifecycle advanced, the
checkpoint, test accuracies). An exception raised by the model's own computation is a fault: the
report says so (``fault``) and carries NaN losses; it never reaches the agent. Everything it
returns is a Python float or int (the ``.item()`` calls happen here), so the core never sees a
tensor.

With ``twin=True`` it also keeps the *seedless twin*: the host as it would be had no seed ever
been blended in, trained on the same mini-batches with its own copy of the host optimiser. The
default reward pays the model's validation accuracy minus the twin's (the value growth added).
The twin is forked lazily, the first time an epoch is about to train with a seed blended in
(alpha > 0): until then the model *is* the seedless host, bit for bit (the TRAINING incubator's
output equals the host's and isolation keeps the host's gradients exact), so the fork is exact
and episodes that never blend a seed pay nothing for it.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from esper_env.config import EsperConfig
from esper_env.core.episode import EpochRequest, Settlement, SlotPlan, TestReading
from esper_env.core.observation import EpisodeFacts
from esper_env.core.state import EpochReport, Germination, SlotMetrics, TwinReading
from esper_env.errors import ConfigError
from esper_env.nn.blueprints import blueprint_param_count, build_blueprint, count_parameters
from esper_env.nn.data import TaskData
from esper_env.nn.model import MorphogeneticModel
from esper_env.nn.slots import SeedGate
from esper_env.tasks import build_host

EVAL_CHUNK = 4096
"""Validation runs the whole split as one batch up to this many samples."""


# torch's module constructors draw from the global CPU generator; build_seeded seeds it for the
# length of one build and restores it. The lock makes builds in different threads (envs stepped
# by a thread-based vector env) take turns, so none sees another's seed or restores its state.
_GLOBAL_RNG_LOCK = threading.RLock()  # re-entrant: a factory may build seeded parts itself


def build_seeded(seed: int, factory: callable) -> nn.Module:  # type: ignore[valid-type]
    """Build a module with reproducible initial weights, leaving the global CPU RNG untouched.

    Thread-safe against other ``build_seeded`` calls (they take turns); code in another thread
    that draws from the global CPU generator while a build runs would see the build's seed.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also reseed every CUDA/MPS
        # generator, which fork_rng(devices=[]) does not restore. Modules are built on the CPU.
        torch.default_generator.manual_seed(seed)
        return factory()


def check_device(device: str) -> None:
    """Raise ConfigError if ``device`` does not exist on this machine."""
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            raise ConfigError(f"device={device!r} is not available: this machine has {n} CUDA "
                              f"device(s); allowed: 'cpu'" + (f" or cuda:0..{n - 1}" if n else ""))
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' is not available on this machine; allowed: 'cpu'")


def sgd(params: Sequence[nn.Parameter], lr: float, momentum: float,
        weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with ``fused=True``: one kernel per step for all of ``params``.

    The unfused default runs a Python loop over the parameters on the CPU and several
    ``_foreach`` kernels on CUDA. On the CPU fusing saves 2-5 % of a training epoch
    (``python -m benchmarks.speed optimizer``); on CUDA it saves kernel launches (not yet timed). Where
    the installed torch cannot fuse SGD for the parameters' device it builds the unfused optimiser
    (the same update, rounded differently in the last bits).
    """
    params = list(params)
    try:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _flat(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` and targets ``(N,)``; a language model's ``(N, T, V)`` and ``(N, T)``
    become one row per token.
    """  # noqa: D205
    if logits.dim() == 3:
        return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return logits, y


def _grad_sq(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """Squared L2 norm of the gradients of ``params`` (a 0-dim tensor; no device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    return torch.stack(torch._foreach_norm(grads)).square().sum()


def _set_flags(modules: Sequence[nn.Module], training: bool) -> None:
    for m in modules:
        m.training = training


class Trainer:
    """Training loop of one episode.

    Args:
        cfg: the environment config (host, optimisers, slots, blend).
        data: the task's tensors, already on the device.
        model_seed: seed of the host's initial weights.
        data_seed: seed of the mini-batch order.
        twin: keep the seedless twin (see the module docstring).
    """

    def __init__(self, cfg: EsperConfig, data: TaskData, model_seed: int, data_seed: int,
                 twin: bool = False) -> None:
        self.cfg = cfg
        self.data = data
        spec = data.spec
        self.device = data.train_x.device
        host = build_seeded(model_seed, lambda: build_host(spec, cfg.host, cfg.host.bn_momentum))
        points = cfg.host.injection_points
        n_points, n_slots = len(host.injection_points), cfg.host.n_slots
        if points is None:
            if n_slots > n_points:
                raise ConfigError(f"n_slots={n_slots} is invalid; allowed: 1..{n_points} "
                                  f"(the host has {n_points} injection points)")
            points = tuple(range(n_points - n_slots, n_points))
        # None: torch's default layout, untouched; channels_last: the model and every batch
        self.memory_format = torch.channels_last if cfg.runtime.channels_last else None
        self.model = self._to_device(MorphogeneticModel(host, points, cfg.lifecycle.blend))
        self.model.train()
        self.host_params = count_parameters(host)
        self._host_param_list = self.model.host_parameters()
        self._n_host = sum(p.numel() for p in self._host_param_list)
        self._module_list: tuple[nn.Module, ...] | None = None
        self.host_opt = self._host_optimizer()
        self.seed_opts: list[torch.optim.Optimizer | None] = [None] * len(points)
        self.generator = torch.Generator().manual_seed(data_seed)
        opt = cfg.optimiser
        clip = opt.grad_clip if opt.grad_clip is not None else spec.grad_clip
        self.grad_clip = None if clip is None or math.isinf(clip) else float(clip)
        self.seed_lr = float(opt.seed_lr if opt.seed_lr is not None else spec.seed_lr)
        self._checkpoint: dict[str, object] | None = None
        self.twin_enabled = bool(twin)
        self.twin: nn.Module | None = None
        self.twin_opt: torch.optim.Optimizer | None = None
        self._twin_modules: tuple[nn.Module, ...] = ()

    def _to_device(self, module: nn.Module) -> nn.Module:
        """``module`` on the trainer's device, in its memory layout (``cfg.runtime.channels_last``)."""
        if self.memory_format is None:
            return module.to(self.device)
        return module.to(self.device, memory_format=self.memory_format)

    def _host_optimizer(self, params: Sequence[nn.Parameter] | None = None
                        ) -> torch.optim.Optimizer:
        c = self.cfg.optimiser
        params = self.model.host_parameters() if params is None else params
        return sgd(params, lr=c.host_lr, momentum=c.host_momentum, weight_decay=c.host_weight_decay)

    def _set_training(self, flag: bool) -> None:
        """``model.train(flag)`` without the recursive walk (a cached module list).

        ``Module.train`` recurses through every child on every call; on tiny hosts that walk costs
        more than a validation pass. The list is rebuilt whenever a seed enters or leaves.
        """
        if self._module_list is None:
            self._module_list = tuple(self.model.modules())
        _set_flags(self._module_list, flag)

    # -- seeds ----------------------------------------------------------------------------------
    def germinate(self, slot: int, blueprint: str, module_seed: int) -> tuple[int, bool]:
        """Build ``blueprint`` into ``slot``; returns (seed parameters, shape probe passed).

        The seed starts in mode ``off``; its SGD optimiser is created here. If the shape probe
        fails (a wrong output shape, or the forward raises) the slot is left empty.
        """
        s = self.model.slots[slot]
        topology = self.data.spec.topology
        options = {"checkpoint": True} if self.cfg.runtime.seed_checkpointing else {}
        seed = build_seeded(module_seed, lambda: build_blueprint(topology, blueprint, s.channels,
                                                                 **options))
        gate = build_seeded(module_seed + 1, lambda: SeedGate(s.channels, s.sequence)) \
            if s.blend == "gate" else None
        self._to_device(seed)
        if gate is not None:
            self._to_device(gate)
        probe = torch.zeros(1, *s.shape, device=self.device)
        if self.memory_format is not None:
            probe = probe.contiguous(memory_format=self.memory_format)
        with torch.no_grad():
            seed.eval()
            try:
                shape_ok = tuple(seed(probe).shape) == tuple(probe.shape)
            except Exception:  # noqa: BLE001 - a module that cannot even run fails G0 like a bad shape
                shape_ok = False
            seed.train()
        if not shape_ok:
            return 0, False
        s.set_seed(seed, gate)
        self._module_list = None
        self.seed_opts[slot] = sgd(s.seed_parameters(), lr=self.seed_lr,
                                   momentum=self.cfg.optimiser.seed_momentum)
        return sum(p.numel() for p in s.seed_parameters()), True

    def seed_param_count(self, slot: int, blueprint: str) -> int:
        """Parameters ``germinate(slot, blueprint)`` would add (the seed and, with the ``gate``
        blend, its gate), counted without building real weights.
        """  # noqa: D205
        s = self.model.slots[slot]
        n = blueprint_param_count(self.data.spec.topology, blueprint, s.channels)
        if s.blend == "gate":
            with torch.device("meta"):
                n += count_parameters(SeedGate(s.channels))
        return n

    def cull(self, slot: int) -> None:
        """Remove the seed of ``slot`` and drop its optimiser."""
        self.model.slots[slot].set_seed(None)
        self._module_list = None
        self.seed_opts[slot] = None

    def configure(self, slot: int, mode: str, alpha: float, isolate: bool) -> None:
        """Set a slot's forward mode, alpha and isolation."""
        self.model.slots[slot].configure(mode, alpha, isolate)

    # -- the seedless twin ----------------------------------------------------------------------
    @property
    def blends_a_seed(self) -> bool:
        """True when a seed is blended into the forward pass (some slot has alpha > 0).

        Until this first happens the model computes exactly the seedless host's function.
        """
        return any(s.is_active and s.mode == "blend" and s.alpha > 0.0 for s in self.model.slots)

    def fork_twin(self) -> None:
        """Make the twin an exact copy of the host and of its optimiser state, now."""
        twin = copy.deepcopy(self.model.host)
        opt = self._host_optimizer(twin.parameters())
        # deepcopy: load_state_dict would otherwise share the momentum buffers with host_opt.
        opt.load_state_dict(copy.deepcopy(self.host_opt.state_dict()))
        self.twin, self.twin_opt = twin, opt
        self._twin_modules = tuple(twin.modules())

    def drop_twin(self) -> None:
        """Forget the twin (after it diverged); ``twin_enabled`` stays, no new fork happens."""
        self.twin, self.twin_opt, self._twin_modules = None, None, ()
        self.twin_enabled = False

    def twin_validate(self, split: str = "val") -> tuple[float, float] | None:
        """Loss and accuracy (pp) of the twin on ``split``; None while no twin exists."""
        twin = self.twin
        if twin is None:
            return None
        loss, acc, _ = self._score(split, lambda x: (twin(x), {}), self._twin_modules, True)
        return loss, acc

    # -- training and evaluation ----------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float, list[float], list[int]]:
        """One pass over the training split (and the twin's pass over the same mini-batches).

        Returns:
            mean training loss, training accuracy (pp), per-slot gradient ratio over the whole
            epoch: ``(seed |g| / sqrt(n_seed)) / (host |g| / sqrt(n_host))`` where each ``|g|`` is
            the root-sum-square of that part's gradient norms over every mini-batch of the epoch
            (0 without an active seed), and per-slot isolation violations this epoch.
        """
        model, data = self.model, self.data
        slots = model.slots
        if self.twin_enabled and self.twin is None and self.blends_a_seed:
            self.fork_twin()
        twin, twin_opt = self.twin, self.twin_opt
        before = [s.isolation_violations for s in slots]
        n = data.train_x.shape[0]
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        xs, ys = data.train_x[perm], data.train_y[perm]
        aug = data.augmentation(n, self.generator)
        clip = self.grad_clip
        twin_params = [] if twin is None else list(twin.parameters())
        opts = [self.host_opt] + [o for o in self.seed_opts if o is not None]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        bs = self.cfg.optimiser.batch_size
        active = [k for k, s in enumerate(slots) if s.is_active]
        seed_params = {k: slots[k].seed_parameters() for k in active}
        host_sq = torch.zeros((), device=self.device)
        seed_sq = {k: torch.zeros((), device=self.device) for k in active}
        self._set_training(True)
        for start in range(0, n, bs):
            x = data.prepare(xs[start:start + bs], None if aug is None else aug[start:start + bs],
                             self.memory_format)
            y = ys[start:start + bs]
            out, y_flat = _flat(model(x), y)
            loss = F.cross_entropy(out, y_flat)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if active:
                host_sq += _grad_sq(self._host_param_list)
                for k in active:
                    seed_sq[k] += _grad_sq(seed_params[k])
            if clip is not None:  # after measuring: G2 sees the raw gradients
                nn.utils.clip_grad_norm_(self._host_param_list, clip, foreach=True)
                for k in active:
                    nn.utils.clip_grad_norm_(seed_params[k], clip, foreach=True)
            for opt in opts:
                opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * y_flat.shape[0]
                correct += (out.argmax(dim=1) == y_flat).sum()
            if twin is not None:
                assert twin_opt is not None
                twin_loss = F.cross_entropy(*_flat(twin(x), y))
                twin_opt.zero_grad(set_to_none=True)
                twin_loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(twin_params, clip, foreach=True)
                twin_opt.step()
        ratios = [0.0] * len(slots)
        if active:
            host = math.sqrt(float(host_sq))
            n_host = self._n_host
            for k in active:
                seed, n_seed = math.sqrt(float(seed_sq[k])), sum(p.numel() for p in seed_params[k])
                if host >= 1e-12 and seed >= 1e-12 and n_seed > 0:
                    r = (seed / math.sqrt(n_seed)) / (host / math.sqrt(n_host))
                    ratios[k] = r if math.isfinite(r) else 0.0
        violations = [s.isolation_violations - b for s, b in zip(slots, before, strict=True)]
        items = n * data.n_items
        return float(loss_sum) / items, 100.0 * float(correct) / items, ratios, violations

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.data
        if split == "val":
            return d.val_x, d.val_y
        if split == "test":
            return d.test_x, d.test_y
        if split == "train":
            return d.train_x, d.train_y
        raise ValueError(f"split={split!r} is invalid; allowed: 'train', 'val', 'test'")

    def validate(self, counterfactual_slots: Sequence[int] = (), split: str = "val"
                 ) -> tuple[float, float, dict[int, float]]:
        """Loss and accuracy (pp) on ``split``, plus each listed slot's counterfactual.

        The counterfactual of slot ``k`` is accuracy(real) - accuracy(slot k's alpha forced to 0),
        in pp, on the same batches, in eval mode under ``inference_mode``; the train/eval mode is
        restored afterwards even on error.
        """
        if self._module_list is None:
            self._module_list = tuple(self.model.modules())
        loss, acc, ablated_acc = self._score(
            split, lambda x: self.model.forward_ablations(x, counterfactual_slots),
            self._module_list, self.model.training)
        return loss, acc, {k: acc - a for k, a in ablated_acc.items()}

    def _score(self, split: str, forward: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
               modules: Sequence[nn.Module], restore: bool
               ) -> tuple[float, float, dict[int, float]]:
        """One eval-mode pass over ``split``: loss, accuracy (pp) and the accuracy of every extra
        logits ``forward`` returns (keyed as it keys them).

        ``forward(x)`` returns ``(logits, {key: logits})``. ``modules`` are put in eval mode under
        ``inference_mode`` and set back to ``restore`` afterwards, even on error.
        """  # noqa: D205
        x_all, y_all = self._split(split)
        n = x_all.shape[0]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        extra: dict = {}
        try:
            _set_flags(modules, False)
            with torch.inference_mode():
                for start in range(0, n, EVAL_CHUNK):
                    x = self.data.prepare(x_all[start:start + EVAL_CHUNK],
                                          memory_format=self.memory_format)
                    y = y_all[start:start + EVAL_CHUNK]
                    real, others = forward(x)
                    real, y_flat = _flat(real, y)
                    loss_sum += F.cross_entropy(real, y_flat, reduction="sum")
                    correct += (real.argmax(dim=1) == y_flat).sum()
                    for k, logits in others.items():
                        hits = (_flat(logits, y)[0].argmax(dim=1) == y_flat).sum()
                        extra[k] = extra.get(k, 0) + hits
        finally:
            _set_flags(modules, restore)
        n *= self.data.n_items
        return (float(loss_sum) / n, 100.0 * float(correct) / n,
                {k: 100.0 * float(c) / n for k, c in extra.items()})

    def evaluate(self, split: str = "val", ablate_slot: int | None = None) -> tuple[float, float]:
        """Loss and accuracy (pp) of the whole model, optionally with one slot's alpha forced to 0.

        A plain full forward pass per call (no shared trunk): the independent reference for the
        counterfactual that :meth:`validate` computes.
        """
        if ablate_slot is None:
            loss, acc, _ = self.validate((), split)
            return loss, acc
        with self.model.slots[ablate_slot].ablated():
            loss, acc, _ = self.validate((), split)
        return loss, acc

    # -- what the episode's observation reports of the model --------------------------------------
    def facts(self) -> EpisodeFacts:
        """The episode's constants as observed: host size and learning rate, data, slots."""
        c, model = self.cfg, self.model
        return EpisodeFacts(
            host_params=self.host_params, host_lr=c.optimiser.host_lr,
            train_fraction=c.task.train_fraction, label_noise=c.task.label_noise,
            param_budget=c.lifecycle.param_budget,
            slot_channels=tuple(s.channels for s in model.slots),
            slot_depths=tuple((q + 1) / len(model.host.blocks) for q in model.points))

    def seed_costs(self, blueprints: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """``costs[s][b]``: parameters blueprint ``b`` would add at slot ``s``."""
        return tuple(tuple(self.seed_param_count(k, b) for b in blueprints)
                     for k in range(len(self.model.slots)))

    # -- the governor's checkpoint ------------------------------------------------------------
    def checkpoint(self) -> None:
        """Keep the whole model as the last known good state: the host, every seed (live or
        fossilised) with its gate, slot modes and alphas, and the optimisers' states.

        One deep copy on the env's device (the models are small), taken together so that each
        optimiser in the copy refers to the copied parameters. Not part of it: the data-order
        generator (after a rollback training goes on with fresh mini-batches) and the seedless
        twin (the no-growth world, where nothing panicked, is never rolled back).
        """  # noqa: D205
        self._checkpoint = copy.deepcopy({"model": self.model, "host_opt": self.host_opt,
                                          "seed_opts": self.seed_opts})

    @property
    def checkpoint_slots(self) -> tuple[int, ...]:
        """Slots that hold a seed (live or fossilised) in the checkpoint."""
        if self._checkpoint is None:
            return ()
        model = self._checkpoint["model"]
        assert isinstance(model, MorphogeneticModel)
        return tuple(k for k, s in enumerate(model.slots) if s.seed is not None)

    def restore_checkpoint(self) -> None:
        """Put the checkpoint back (a fresh copy of it, so it can be restored again)."""
        if self._checkpoint is None:
            raise RuntimeError("restore_checkpoint() without a checkpoint")
        state = copy.deepcopy(self._checkpoint)
        self.model = state["model"]  # type: ignore[assignment]
        self.host_opt = state["host_opt"]  # type: ignore[assignment]
        self.seed_opts = state["seed_opts"]  # type: ignore[assignment]
        self._module_list = None
        self._host_param_list = self.model.host_parameters()

    # -- what an episode asks of it -----------------------------------------------------------
    def apply_slots(self, plans: Sequence[SlotPlan | None]) -> None:
        """Make every slot compute as planned: a plan configures the slot's seed (mode, alpha,
        isolation); None removes the seed the slot holds. A slot without a seed is left as is.
        """  # noqa: D205
        for k, (plan, slot) in enumerate(zip(plans, self.model.slots, strict=True)):
            if slot.seed is None:
                continue
            if plan is None:
                self.cull(k)
            else:
                self.configure(k, plan.mode, plan.alpha, plan.isolate)

    def run_epoch(self, request: EpochRequest) -> EpochReport:
        """One epoch as ``request`` asks (see :class:`~esper_env.core.episode.EpochRequest`).

        The report carries the germination's result and the twin's validation accuracy. Without
        ``request.train`` its measurements are placeholders (NaN losses) the episode ignores.
        """
        for b in request.build:
            if not self.germinate(b.slot, b.blueprint, b.module_seed)[1]:
                raise ConfigError(f"static_seeds: blueprint {b.blueprint!r} fails its shape probe "
                                  f"at slot {b.slot}")
        germination = None
        if request.germinate is not None:
            g = request.germinate
            germination = Germination(*self.germinate(g.slot, g.blueprint, g.module_seed))
        self.apply_slots(request.slots)
        if request.checkpoint:
            self.checkpoint()
        if request.train:
            if request.poison:
                self.poison_host()
            report = self._measure_epoch()
        else:
            nan = float("nan")
            report = EpochReport(nan, 0.0, nan, 0.0, ())
        twin = self._twin_reading("val") if request.twin else TwinReading()
        return EpochReport(report.train_loss, report.train_acc, report.val_loss, report.val_acc,
                           report.slots, report.fault, germination, twin)

    def roll_back(self, plans: Sequence[SlotPlan | None]) -> EpochReport:
        """Restore the checkpoint, set the slots as planned and describe the restored model
        (validation, and the training split's loss and accuracy; a fault if it cannot run).
        """  # noqa: D205
        self.restore_checkpoint()
        self.apply_slots(plans)
        try:
            return self._validation_report()
        except Exception as exc:  # noqa: BLE001 - the restored state cannot run either
            return self._fault_report(exc)

    def settle(self, settlement: Settlement) -> TestReading:
        """End a step as ``settlement`` asks: slots, checkpoint, then the test accuracies."""
        self.apply_slots(settlement.slots)
        if settlement.checkpoint:
            self.checkpoint()
        acc, fault = None, None
        if settlement.test:
            try:
                acc = self.evaluate("test")[1]
            except Exception as exc:  # noqa: BLE001 - a broken model scores 0, the agent sees no error
                acc, fault = 0.0, _fault_name(exc)
        twin = self._twin_reading("test") if settlement.twin_test else TwinReading()
        return TestReading(acc, twin, fault)

    def _measure_epoch(self) -> EpochReport:
        """Train one epoch and validate; an exception of the model's computation is a fault."""
        try:
            train_loss, train_acc, ratios, violations = self.train_epoch()
            return self._validation_report(train_loss, train_acc, ratios, violations)
        except Exception as exc:  # noqa: BLE001 - a fault, like a NaN loss (module docstring)
            return self._fault_report(exc)

    def _validation_report(self, train_loss: float | None = None, train_acc: float | None = None,
                           ratios: Sequence[float] | None = None,
                           violations: Sequence[int] | None = None) -> EpochReport:
        """Validate with the counterfactual of every blended seed (alpha > 0)."""
        cf_slots = [k for k, s in enumerate(self.model.slots)
                    if s.is_active and s.mode == "blend" and s.alpha > 0.0]
        val_loss, val_acc, contributions = self.validate(cf_slots)
        if train_loss is None:  # after a rollback: describe the restored model
            train_loss, train_acc, _ = self.validate((), "train")
        n = len(self.model.slots)
        ratios = ratios or [0.0] * n
        violations = violations or [0] * n
        slots = tuple(SlotMetrics(ratios[k], violations[k], contributions.get(k)) for k in range(n))
        return EpochReport(train_loss, train_acc, val_loss, val_acc, slots)  # type: ignore[arg-type]

    def _fault_report(self, exc: Exception) -> EpochReport:
        """The report of an epoch whose computation raised ``exc``: NaN losses, accuracy 0."""
        nan = float("nan")
        slots = tuple(SlotMetrics() for _ in self.model.slots)
        return EpochReport(nan, 0.0, nan, 0.0, slots, _fault_name(exc))

    def _twin_reading(self, split: str) -> TwinReading:
        """The twin's accuracy on ``split``; a twin whose loss is not finite is dropped (a diverged
        baseline can neither pay nor charge any more).
        """  # noqa: D205
        twin = self.twin_validate(split)
        if twin is not None and not math.isfinite(twin[0]):
            self.drop_twin()
            twin = None
        return TwinReading(None if twin is None else twin[1], self.twin_enabled)

    def poison_host(self) -> None:
        """Fault injection: overwrite every host weight with NaN."""
        with torch.no_grad():
            for p in self.model.host_parameters():
                p.fill_(float("nan"))

    def parameters_finite(self) -> bool:
        """True if every model parameter is finite."""
        with torch.no_grad():
            return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())


def _fault_name(exc: Exception) -> str:
    """How a fault is named in ``info["fault"]``: ``"ExceptionType: message"``."""
    return f"{type(exc).__name__}: {exc}"
