"""Blueprint names per host topology, in action order (pure; the modules live in ``esper_env.nn``).

The order is ascending parameter count at every injection point of the shipped hosts (a test
checks it against the real modules), and it is the order of the GERMINATE_* actions and of the
blueprint one-hot in the observation.
"""

from __future__ import annotations

BLUEPRINT_NAMES: dict[str, tuple[str, ...]] = {
    "cnn": ("norm", "attention", "depthwise", "conv_light", "conv_heavy"),
}
"""topology -> blueprint names in action order."""
