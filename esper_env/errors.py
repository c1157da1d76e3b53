"""Exceptions raised by esper_env.

One class per kind of bad input (see the error table in docs/config.md):

* :class:`ConfigError` - an invalid configuration value, raised at construction.
* :class:`UnknownBlueprint` - a blueprint name that is not in the catalog, with a "did you mean".
* :class:`InvalidTransition` - an illegal lifecycle move inside the core. Masks are checked first, so
  seeing it means a bug in esper_env, never a mistake of the agent.

Actions outside the action space raise :class:`gymnasium.error.InvalidAction` (from ``env.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EsperError(Exception):
    """Base class of every esper_env error."""


class ConfigError(EsperError, ValueError):
    """An invalid configuration value: names the field, the value and what is allowed."""


class InvalidTransition(EsperError, RuntimeError):
    """An illegal seed lifecycle transition (a bug if it ever reaches the agent)."""


class UnknownBlueprint(EsperError, KeyError):
    """A blueprint name that is not in the catalog."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = list(known)
        self.name = name
        self.known = tuple(known)
        super().__init__(unknown_name_message("blueprint", name, known))

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def unknown_name_message(what: str, name: object, known: Iterable[str]) -> str:
    """Build "unknown <what> 'x'; did you mean 'y'? Allowed: ..." for a bad name."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} Allowed: {', '.join(repr(k) for k in known)}"
