"""``synthetic``: class prototypes plus noise, generated from the episode seed (for tests).

``synthetic_samples`` samples per class, stratified 60/20/20 split drawn from the episode seed; a
step takes milliseconds. Host: the digits CNN (widths 2-4-8) on 8×8 inputs, 4 classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esper_env.tasks.spec import LoadRequest, Splits, Task, TaskSpec, cnn_host

if TYPE_CHECKING:
    import torch

SPEC = TaskSpec("synthetic", "cnn", 1, 8, 4, host_channels=(2, 4, 8), pool_layers=2)


def load(request: LoadRequest) -> Splits:
    """Fresh data from ``request.episode_seed`` (``request.synthetic_samples`` per class)."""
    return Splits(_synthetic_cpu(request.synthetic_samples, request.episode_seed))


def _synthetic_cpu(per_class: int, seed: int) -> tuple[torch.Tensor, ...]:
    import torch

    from esper_env.tasks.splits import stratified_split

    g = torch.Generator().manual_seed(seed)
    shape = (SPEC.in_channels, SPEC.image_size, SPEC.image_size)
    protos = torch.randn((SPEC.n_classes, *shape), generator=g)
    y = torch.arange(SPEC.n_classes).repeat_interleave(per_class)
    x = protos[y] + 1.5 * torch.randn((len(y), *shape), generator=g)
    tr, va, te = stratified_split(y.numpy(), (0.6, 0.2, 0.2), seed)
    out = []
    for idx in (tr, va, te):
        t = torch.from_numpy(idx)
        out += [x[t].contiguous(), y[t].contiguous()]
    return tuple(out)


TASK = Task(SPEC, load, cnn_host)
