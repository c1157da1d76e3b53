"""Command-line options declared once, as dataclass fields (CleanRL's ``Args``, tyro's way).

A CLI's options are the fields of a dataclass, each made with :func:`option`; :func:`add_options`
derives the argparse arguments from them and :func:`from_namespace` turns the parsed namespace back
into the dataclass:

* flag: the field name with dashes (``total_timesteps`` → ``--total-timesteps``); a ``bool`` that
  defaults to False is the switch ``--name``, one that defaults to True is ``--no-name``;
* type: the annotation (``int | None`` → ``int``); default: the field's; help, ``choices``,
  ``metavar``, ``action`` and ``type`` overrides, the argument group: :func:`option`'s arguments;
* a field declared with ``options=SomeOptions`` stands for a whole group of options declared by
  another dataclass (the env options, :class:`EnvOptions`, shared by esper-train, esper-eval and
  esper-bench); its value is what that group's ``to_value`` makes of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

_MISSING: Any = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, default_factory: Any = _MISSING,
           group: str | None = None, cli_default: Any = _MISSING,
           convert: Callable[[Any], Any] | None = None, options: type | None = None,
           **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the field's default (and the option's).
        help: the option's help text.
        default_factory: for mutable defaults, as in :func:`dataclasses.field`.
        group: title of the argparse argument group the option goes in (None: the parser's).
        cli_default: argparse's default where it differs from the field's (``[]`` for a repeated
            option collected into a dict).
        convert: makes the field's value from the parsed value (e.g. ``dict``).
        options: a dataclass of options that this field stands for (see the module docstring).
        **argparse_kwargs: passed to ``add_argument`` (``choices``, ``metavar``, ``action``, ``type``).
    """
    metadata = {"help": help, "group": group, "cli_default": cli_default, "convert": convert,
                "options": options, "argparse": argparse_kwargs}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _base_type(annotation: Any) -> Any:
    """``int | None`` → ``int`` (the one non-None member of a union)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else None
    return annotation


def _default(f: dataclasses.Field) -> Any:
    if f.metadata["cli_default"] is not _MISSING:
        return f.metadata["cli_default"]
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None if f.default is _MISSING else f.default


def add_options(parser: Any, cls: type, groups: dict[str, Any] | None = None) -> None:
    """Add an argument for every :func:`option` field of ``cls`` to ``parser``, in field order.

    ``parser`` is an ``argparse.ArgumentParser`` or one of its argument groups; ``groups`` holds the
    groups made so far, by title.

    Argument groups are made at their first field, so they appear in ``--help`` in that order.
    """
    groups = {} if groups is None else groups
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue  # a field that is no option
        target: Any = parser
        if meta["group"] is not None:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        if meta["options"] is not None:
            add_options(target, meta["options"], groups)
            continue
        kwargs = dict(meta["argparse"])
        default = _default(f)
        kind = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if kind is bool and "action" not in kwargs:
            if default:
                flag = "--no-" + f.name.replace("_", "-")
            kwargs.update(dest=f.name, action="store_false" if default else "store_true")
        else:
            kwargs.setdefault("default", default)
            if kind in (int, float) and "type" not in kwargs:
                kwargs["type"] = kind
        target.add_argument(flag, help=meta["help"], **kwargs)


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    """The ``cls`` instance that the parsed options in ``ns`` describe."""
    values = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        if meta["options"] is not None:
            values[f.name] = meta["options"].to_value(ns)
        elif meta["convert"] is not None:
            values[f.name] = meta["convert"](getattr(ns, f.name))
        else:
            values[f.name] = getattr(ns, f.name)
    return cls(**values)


# ---- the env options of esper-train, esper-eval and esper-bench --------------------------------

def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → ``(key, value)``, the value read as YAML (``1e-3`` as a number)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string; users mean the number
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


ENV_GROUP = "env (Esper config; see the EsperEnv docstring)"
"""Title of the env options' argument group."""


@dataclasses.dataclass
class EnvOptions:
    """Env options shared by esper-train, esper-eval and esper-bench: EsperConfig overrides."""

    task: str | None = option(None, "task: digits (default), synthetic, ...")
    instance_set: str | None = option(None, "instance set name or JSON file (e.g. digits-mix)")
    instance_split: str | None = option(None, "instance split to train on (default train)",
                                        choices=("train", "test"))
    reward_mode: str | None = option(None, "contribution (default), delta or sparse")
    n_slots: int | None = option(None, "seed slots")
    max_epochs: int | None = option(None, "epochs per episode (default 25: 24 steps)")
    env_kwarg: list[tuple[str, Any]] = option(
        help="any other EsperConfig field, value in YAML (repeatable), "
             "e.g. --env-kwarg 'gates={min_fossilize_contribution: 2.0}'",
        default_factory=list, action="append", type=key_value, metavar="KEY=VALUE")

    @staticmethod
    def to_value(ns: argparse.Namespace) -> dict[str, Any]:
        """The env kwargs given on the command line (options left out are not in it)."""
        return env_kwargs_from(ns)


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """Add the env options (:class:`EnvOptions`) as their own argument group."""
    add_options(p.add_argument_group(ENV_GROUP), EnvOptions)


def env_kwargs_from(ns: argparse.Namespace) -> dict[str, Any]:
    """The env kwargs given on the command line."""
    names = [f.name for f in dataclasses.fields(EnvOptions) if f.name != "env_kwarg"]
    kw = {k: getattr(ns, k) for k in names if getattr(ns, k) is not None}
    kw.update(dict(ns.env_kwarg))
    return kw
