"""Plain records that cross from the torch layer to the core (Python floats and ints, no tensors).

Pure module: core code is tested with hand-made numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from esper_env.core.alpha import AlphaController
from esper_env.core.lifecycle import MODULE_STAGES, SeedStage

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.config import GateConfig


class LifecycleRules(Protocol):
    """What the lifecycle and mask functions read: an episode's
    :class:`~esper_env.core.episode.EpisodeParams` (the config's lifecycle section, resolved).
    """  # noqa: D205

    @property
    def gates(self) -> GateConfig: ...  # noqa: D102
    @property
    def blending_epochs(self) -> int: ...  # noqa: D102
    @property
    def effective_probation_timeout(self) -> int: ...  # noqa: D102
    @property
    def embargo_epochs(self) -> int: ...  # noqa: D102
    @property
    def germination_gate(self) -> bool: ...  # noqa: D102
    @property
    def min_germinate_epoch(self) -> int: ...  # noqa: D102
    @property
    def plateau_epochs_to_germinate(self) -> int: ...  # noqa: D102
    @property
    def param_budget(self) -> float | None: ...  # noqa: D102
    @property
    def min_cull_age(self) -> int: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class GateResult:
    """Outcome of one gate: which gate, whether it passed, and the names of failed checks."""

    gate: str
    passed: bool
    failed: tuple[str, ...] = ()

    def to_info(self) -> dict[str, object]:
        """Plain dict for ``info``."""
        return {"gate": self.gate, "passed": self.passed, "failed": list(self.failed)}


@dataclass(frozen=True, slots=True)
class SlotMetrics:
    """What the trainer measured for one slot during one epoch.

    Attributes:
        gradient_ratio: (seed |g| / sqrt(n_seed)) / (host |g| / sqrt(n_host)) over the whole
            epoch (each |g| the root-sum-square over every mini-batch), 0 without a seed.
        isolation_violations: backward passes this epoch in which host gradient arrived through
            the seed path while isolation was on.
        counterfactual: val accuracy with the seed minus with its alpha forced to 0, in pp;
            None when the slot's alpha is 0 (no counterfactual exists).
    """

    gradient_ratio: float = 0.0
    isolation_violations: int = 0
    counterfactual: float | None = None


@dataclass(frozen=True, slots=True)
class Germination:
    """What building a seed module into a slot gave: its parameters and the shape probe (G0)."""

    seed_params: int
    shape_ok: bool


@dataclass(frozen=True, slots=True)
class TwinReading:
    """The seedless twin's accuracy (pp) on a split: None while no twin has been forked.

    ``enabled`` is False once the twin has diverged and been dropped (or in a reward mode that
    keeps none); the no-growth world then has no accuracy any more.
    """

    acc: float | None = None
    enabled: bool = False


@dataclass(frozen=True, slots=True)
class EpochReport:
    """One epoch of training and validation (accuracies in pp, losses in nats).

    Attributes:
        train_loss, train_acc, val_loss, val_acc: the model's measurements.
        slots: per-slot measurements, in slot order.
        fault: ``"ExceptionType: message"`` when the model's computation raised (the losses are
            then NaN and the accuracies 0), None otherwise.
        germination: the result of the germination requested for this epoch, if any.
        twin: the seedless twin's validation accuracy (contribution mode).
    """

    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    slots: tuple[SlotMetrics, ...] = ()
    fault: str | None = None
    germination: Germination | None = None
    twin: TwinReading = TwinReading()


@dataclass(frozen=True, slots=True)
class SlotState:
    """Lifecycle state of one seed slot.

    Attributes:
        index: slot number (action and observation order).
        stage: current :class:`SeedStage`.
        blueprint: blueprint name of the seed, None when the slot holds none.
        seed_id: episode-unique seed name (``seed0``, ``seed1``...).
        seed_params: trainable parameters of the seed module (0 without one).
        epochs_in_stage: epochs trained since the stage was entered.
        seed_age: epochs trained since germination.
        alpha: blend-weight controller; ``alpha.alpha`` is the value used in training.
        acc_at_germination: val accuracy (pp) when the seed was germinated.
        acc_at_stage_start: val accuracy (pp) when the current stage was entered.
        current_acc: val accuracy (pp) after the last epoch.
        counterfactual: this epoch's counterfactual contribution (pp), None if none exists.
        gradient_ratio: last parameter-normalised gradient ratio (feeds G2).
        isolation_violations: cumulative host gradients through the seed path (feeds G2).
        last_gate: result of the last gate checked for this slot.
    """

    index: int
    stage: SeedStage = SeedStage.DORMANT
    blueprint: str | None = None
    seed_id: str | None = None
    seed_params: int = 0
    epochs_in_stage: int = 0
    seed_age: int = 0
    alpha: AlphaController = field(default_factory=AlphaController)
    acc_at_germination: float | None = None
    acc_at_stage_start: float = 0.0
    current_acc: float = 0.0
    counterfactual: float | None = None
    gradient_ratio: float = 0.0
    isolation_violations: int = 0
    last_gate: GateResult | None = None

    @property
    def improvement_since_stage_start(self) -> float:
        """current_acc - acc_at_stage_start, in pp."""
        return self.current_acc - self.acc_at_stage_start

    @property
    def total_improvement(self) -> float:
        """current_acc - acc_at_germination, in pp (0 without a seed)."""
        if self.acc_at_germination is None:
            return 0.0
        return self.current_acc - self.acc_at_germination


def added_parameters(slots: Sequence[SlotState]) -> int:
    """Parameters of the seed modules the model holds now (each module counted once)."""
    return sum(s.seed_params for s in slots if s.stage in MODULE_STAGES)
