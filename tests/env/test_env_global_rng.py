"""The env never changes Python's global ``random``, NumPy's global RNG or torch's global RNG.

Checked in a fresh interpreter per task, so that import-time side effects are seen too (the
``rng_guard`` fixture only sees what happens after everything is imported): the states before and
after ``import esper_env``, ``gym.make``, the first ``reset(seed=0)`` and a few steps (a
GERMINATE, which builds a seed module, then WAITs) must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_kwargs

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, random, sys

kwargs = json.loads(sys.argv[1])
py = random.getstate()  # before anything of numpy, torch, gymnasium or esper_env is imported
import numpy as np
import torch

state = {"random": py, "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
changed = []


def check(stage):
    now = {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    a, b = state["numpy"], now["numpy"]
    same = {"random": state["random"] == now["random"],
            "numpy": a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:],
            "torch": torch.equal(state["torch"], now["torch"])}
    changed.extend(f"{stage}: global {name} RNG changed" for name, ok in same.items() if not ok)
    state.update(now)


import esper_env  # noqa: E402
import gymnasium as gym  # noqa: E402

check("import esper_env")
env = gym.make("Esper-v0", **kwargs)
check("gym.make")
env.reset(seed=0)
check("reset(seed=0)")
names = env.unwrapped.action_names
mask = env.unwrapped.action_masks()
germinate = next(i for i, n in enumerate(names) if n.startswith("GERMINATE_") and mask[i])
env.step(germinate)
check(f"step({names[germinate]})")
for _ in range(3):
    env.step(names.index("WAIT"))
check("step(WAIT) x3")
env.close()
check("close")
print(json.dumps(changed))
"""

TEXT_HOST = dict(block_size=8, n_embd=16, n_head=2, n_layer=2)


def _task_kwargs(task: str, tmp_path: Path) -> dict:
    """Tiny settings of ``task`` (one torch thread: the models are tiny)."""
    if task == "cifar10":
        from esper_env.nn.cifar import write_cifar10_folder

        root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=20, seed=0)
        task_kw: dict = dict(data_root=str(root), train_subset=40, batch_size=20)
    elif task == "tinytext":
        task_kw = dict(TEXT_HOST, train_subset=64, batch_size=32)
    elif task == "digits":
        task_kw = dict(train_subset=100)
    else:
        task_kw = {}
    return tiny_kwargs(task=task, torch_threads=1, **task_kw)


@pytest.mark.parametrize("task", ["digits", "synthetic", "tinytext", "cifar10"])
def test_env_leaves_global_rngs_alone_from_import_to_germinate(task, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(_task_kwargs(task, tmp_path))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert changed == [], f"task {task!r}: " + "; ".join(changed)
