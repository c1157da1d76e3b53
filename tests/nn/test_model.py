"""MorphogeneticModel: dormant slots, the incubator, forward_ablations and the host optimiser."""

from __future__ import annotations

import pytest
import torch

from esper_env.config import EsperConfig
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.nn.blueprints import build_blueprint
from esper_env.nn.data import load_task
from esper_env.nn.hosts import CNNHost
from esper_env.nn.model import MorphogeneticModel
from esper_env.nn.slots import SeedGate
from esper_env.nn.trainer import Trainer
from esper_env.tasks import TASKS

SPEC = TASKS["synthetic"].spec


def make_model(blend: str = "add", points: tuple[int, ...] = (0, 1, 2)) -> MorphogeneticModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        host = CNNHost(SPEC.in_channels, SPEC.image_size, SPEC.host_channels, SPEC.pool_layers,
                       SPEC.n_classes)
        return MorphogeneticModel(host, points, blend)


def seed_all(model: MorphogeneticModel, blueprint: str = "conv_heavy") -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        for slot in model.slots:
            gate = SeedGate(slot.channels) if slot.blend == "gate" else None
            slot.set_seed(build_blueprint("cnn", blueprint, slot.channels), gate)


def inputs(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, SPEC.in_channels, SPEC.image_size, SPEC.image_size, generator=g)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("with_seeds", [False, True])
def test_model_dormant_slots_equal_bare_host(train: bool, with_seeds: bool) -> None:
    model = make_model()
    if with_seeds:
        seed_all(model)  # installed seeds stay "off"
    model.train(train)
    x = inputs()
    with torch.no_grad():
        assert torch.equal(model(x), model.host(x))


def test_model_points_map_slots_to_injection_points() -> None:
    model = make_model(points=(2, 0))
    ips = model.host.injection_points
    assert [(s.channels, s.size) for s in model.slots] == [(ips[2].channels, ips[2].size),
                                                           (ips[0].channels, ips[0].size)]


@pytest.mark.parametrize("blend", ["add", "multiply", "gate"])
@pytest.mark.parametrize("train", [False, True])
def test_model_incubating_seed_output_equals_seedless(blend: str, train: bool) -> None:
    model = make_model(blend)
    x = inputs()
    model.train(train)
    with torch.no_grad():
        seedless = model(x)
    seed_all(model)
    for slot in model.slots:
        slot.configure("incubate", 0.0, isolate=True)
    out = model(x)
    assert torch.equal(out, seedless)
    # Control: blending the same seeds in does change the logits.
    for slot in model.slots:
        slot.configure("blend", 1.0, isolate=True)
    assert not torch.allclose(model(x), seedless)


def configure_mixed(model: MorphogeneticModel) -> None:
    seed_all(model)
    model.slots[0].configure("blend", 0.6, isolate=True)
    model.slots[1].configure("incubate", 0.0, isolate=True)
    model.slots[2].configure("blend", 1.0, isolate=True)


@pytest.mark.parametrize("blend", ["add", "multiply", "gate"])
def test_model_forward_ablations_real_equals_forward(blend: str) -> None:
    model = make_model(blend)
    configure_mixed(model)
    model.eval()
    x = inputs()
    with torch.inference_mode():
        real, ablated = model.forward_ablations(x, [0, 1, 2])
        assert torch.equal(real, model(x))
    assert set(ablated) == {0, 1, 2}


@pytest.mark.parametrize("blend", ["add", "multiply", "gate"])
@pytest.mark.parametrize("ablate", [[0], [1], [2], [0, 2], [2, 1, 0]])
def test_model_forward_ablations_match_ablated_forward(blend: str, ablate: list[int]) -> None:
    model = make_model(blend)
    configure_mixed(model)
    model.eval()
    x = inputs()
    with torch.inference_mode():
        real, ablated = model.forward_ablations(x, ablate)
        assert sorted(ablated) == sorted(ablate)
        for k in ablate:
            with model.slots[k].ablated():
                reference = model(x)
            assert torch.equal(ablated[k], reference), f"slot {k}"
        # The ablations left every slot active again.
        assert torch.equal(model(x), real)
    # Ablating a blended slot really changes the logits (the comparison is not vacuous).
    with torch.inference_mode(), model.slots[2].ablated():
        assert not torch.allclose(model(x), real)


def test_model_forward_ablations_empty_list() -> None:
    model = make_model()
    configure_mixed(model)
    model.eval()
    x = inputs()
    with torch.inference_mode():
        real, ablated = model.forward_ablations(x, [])
        assert ablated == {}
        assert torch.equal(real, model(x))


@pytest.mark.parametrize("blend", ["add", "gate"])
def test_model_host_optimizer_never_holds_seed_parameters(blend: str) -> None:
    cfg = EsperConfig(task="synthetic", n_slots=3, blend=blend)
    trainer = Trainer(cfg, load_task("synthetic", episode_seed=0, device="cpu"), model_seed=1,
                      data_seed=2)
    host_ids = {id(p) for p in trainer.model.host_parameters()}

    def opt_ids() -> set[int]:
        return {id(p) for g in trainer.host_opt.param_groups for p in g["params"]}

    assert opt_ids() == host_ids
    for k in range(len(trainer.model.slots)):
        for i, name in enumerate(BLUEPRINT_NAMES["cnn"]):
            trainer.germinate(k, name, module_seed=10 * k + i)
            seed_ids = {id(p) for p in trainer.model.slots[k].seed_parameters()}
            assert seed_ids
            assert not seed_ids & opt_ids()
            assert not seed_ids & {id(p) for p in trainer.model.host_parameters()}
            assert opt_ids() == host_ids
            trainer.cull(k)
        trainer.germinate(k, "conv_light", module_seed=99 + k)  # keep one live seed per slot
    assert opt_ids() == host_ids
    trainer.checkpoint()
    trainer.restore_checkpoint()  # the restored copies: the host optimiser still holds host parameters only
    assert opt_ids() == {id(p) for p in trainer.model.host_parameters()}
    seeds = {id(p) for s in trainer.model.slots for p in s.seed_parameters()}
    assert seeds and not seeds & opt_ids()


@pytest.mark.parametrize("points", [(-1, 0, 1, 2), (1, 1), (3,)], ids=["negative", "duplicate",
                                                                      "out-of-range"])
def test_model_rejects_points_that_leave_a_slot_dead(points: tuple[int, ...]) -> None:
    """Spec 4: slots sit at *distinct, existing* injection points.

    A negative or repeated index builds a slot that ``forward`` never calls (a dead slot: a
    germinated seed trains nothing and never changes the output), so the model must refuse it.
    """
    with pytest.raises((ValueError, IndexError)):
        make_model(points=points)
