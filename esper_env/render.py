"""Rendering of an episode: ``ansi`` text and ``rgb_array`` pictures (``EsperEnv.render``)."""

from __future__ import annotations

import numpy as np

from esper_env.core.episode import EpisodeState
from esper_env.core.lifecycle import SeedStage
from esper_env.core.state import added_parameters

STAGE_COLOURS: dict[SeedStage, tuple[int, int, int]] = {
    SeedStage.DORMANT: (200, 200, 200),
    SeedStage.GERMINATED: (150, 190, 255),
    SeedStage.TRAINING: (40, 90, 220),
    SeedStage.BLENDING: (0, 180, 200),
    SeedStage.PROBATIONARY: (240, 190, 0),
    SeedStage.FOSSILIZED: (30, 160, 60),
    SeedStage.CULLED: (220, 30, 30),
    SeedStage.EMBARGOED: (140, 20, 20),
    SeedStage.RESETTING: (240, 120, 40),
}
"""Colour of each stage in ``rgb_array`` renders."""


def render_text(state: EpisodeState | None, max_epochs: int) -> str:
    """A short text table of the epoch and every slot."""
    if state is None:
        return "EsperEnv (not reset)\n"
    r = state.report
    lines = [f"epoch {state.epoch}/{max_epochs}  "
             f"val_acc {r.val_acc:6.2f}  val_loss {r.val_loss:.4f}  "
             f"params +{added_parameters(state.slots)}/{state.setup.host_params}"]
    for s in state.slots:
        c = "-" if s.counterfactual is None else f"{s.counterfactual:+.2f}pp"
        lines.append(f"  slot{s.index}: {s.stage.name:<12} {s.blueprint or '-':<10} "
                     f"alpha {s.alpha.alpha:.2f}  age {s.seed_age:2d}  cf {c}")
    return "\n".join(lines) + "\n"


def render_rgb(curve: tuple[tuple[float, tuple[SeedStage, ...]], ...], n_slots: int,
               max_epochs: int) -> np.ndarray:
    """A uint8 image, one 4-pixel column per epoch of the budget: validation accuracy as a bar
    on top, then one strip per slot coloured by the stage it trained in that epoch.
    """  # noqa: D205
    col, bar_h, strip_h = 4, 48, 8
    img = np.full((bar_h + strip_h * n_slots, col * max_epochs, 3), 255, np.uint8)
    for e, (acc, stages) in enumerate(curve):
        x = slice(e * col, (e + 1) * col - 1)
        h = int(round(bar_h * min(max(acc, 0.0), 100.0) / 100.0))
        img[bar_h - h:bar_h, x] = (60, 60, 60)
        for k, stage in enumerate(stages):
            img[bar_h + k * strip_h: bar_h + (k + 1) * strip_h - 1, x] = STAGE_COLOURS[stage]
    return img
