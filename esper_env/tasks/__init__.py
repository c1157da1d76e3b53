"""The task registry: one module per task, each with its spec, loader and host factory.

=============  ======================================================================
``digits``     :mod:`esper_env.tasks.digits` (the default)
``synthetic``  :mod:`esper_env.tasks.synthetic` (for tests)
``cifar10``    :mod:`esper_env.tasks.cifar10` (a local folder)
``tinytext``   :mod:`esper_env.tasks.tinytext` (a transformer host)
=============  ======================================================================

A task module defines ``SPEC`` (a :class:`~esper_env.tasks.spec.TaskSpec`, plain data) and
``TASK`` (a :class:`~esper_env.tasks.spec.Task`: the spec, ``load(request) -> Splits`` and
``host(spec, bn_momentum) -> nn.Module``). Importing the registry imports no torch: the config
validates against the specs, and a task's loader and host factory import torch when called.
:func:`build_host` (here) and :func:`esper_env.nn.data.load_task` are the calls the env makes:
they apply what every task shares (a config's host overrides; the training-split knobs and the
device).

To add a task: write its module, add its ``TASK`` to :data:`TASKS`, and give it blueprints of its
topology (:mod:`esper_env.core.catalog`).
"""

from __future__ import annotations

from typing import Any

from esper_env.errors import ConfigError, unknown_name_message
from esper_env.tasks import cifar10, digits, synthetic, tinytext
from esper_env.tasks.spec import HostSizes, LoadRequest, Splits, Task, TaskSpec

__all__ = ["TASKS", "HostSizes", "LoadRequest", "Splits", "Task", "TaskSpec", "build_host",
           "get_task", "task_names", "task_spec"]

TASKS: dict[str, Task] = {t.spec.name: t for t in (digits.TASK, synthetic.TASK, cifar10.TASK,
                                                   tinytext.TASK)}
"""Every task by name, in the order the docs list them."""


def task_names() -> tuple[str, ...]:
    """The names of the registered tasks."""
    return tuple(TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; a ConfigError naming the allowed names otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(unknown_name_message("task", name, list(TASKS))) from None


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``, completed with what its data say (tinytext's vocabulary)."""
    task = get_task(name)
    return task.resolve(task.spec)


def build_host(spec: TaskSpec, host: HostSizes, bn_momentum: float) -> Any:
    """The host network of ``spec`` with the overrides of ``host`` (a config's host section)."""
    return get_task(spec.name).host(spec.sized(host), bn_momentum)
