"""Blueprint names per host topology, in action order (pure; the modules live in ``esper_env.nn``).

The order is ascending parameter count at every slot width C >= 2 (every injection point of the
shipped hosts; a test checks widths 2-16, 24, 32 and 64 against the real modules). At C = 1 (a custom
``host_channels`` with a 1-channel block) ``depthwise`` (12 parameters) costs one more than
``conv_light`` (11); nothing relies on the order being by cost: budgets, masks, rent and the
observation use each blueprint's actual count at the slot (``blueprint_param_count``). The order is
that of the GERMINATE_* actions and of the blueprint one-hot in the observation.

The transformer's ``flex_attention`` exists only where the installed torch has FlexAttention; the
torch layer's ``available_blueprints`` drops it elsewhere, and the env's actions and observation
use that list.
"""

from __future__ import annotations

BLUEPRINT_NAMES: dict[str, tuple[str, ...]] = {
    "cnn": ("norm", "attention", "depthwise", "conv_light", "conv_heavy"),
    "transformer": ("norm", "lora", "attention", "flex_attention", "mlp"),
}
"""topology -> blueprint names in action order."""
