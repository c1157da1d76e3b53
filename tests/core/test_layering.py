"""Layering (spec section 2): the pure core imports only the stdlib, numpy and itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import esper_env

PKG = Path(esper_env.__file__).parent
CORE_FILES = sorted((PKG / "core").glob("*.py")) + [PKG / "config.py", PKG / "errors.py"]
FORBIDDEN = {"torch", "gymnasium", "gym", "torchvision", "sklearn"}
ALLOWED_ESPER = ("esper_env.core", "esper_env.config", "esper_env.errors", "esper_env.tasks")
TASK_FILES = sorted((PKG / "tasks").glob("*.py"))


def imported_modules(source: str, filename: str = "<src>") -> list[str]:
    """Every module named by an import statement anywhere in ``source`` (incl. TYPE_CHECKING)."""
    names = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{filename}: relative import"
            names.append(node.module or "")
    return names


def test_core_files_found() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"lifecycle.py", "alpha.py", "gates.py", "state.py", "seeds.py", "tracker.py",
            "actions.py", "observation.py", "reward.py", "governor.py", "catalog.py",
            "config.py", "errors.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_imports_no_torch_or_gymnasium(path: Path) -> None:
    for mod in imported_modules(path.read_text(), path.name):
        root = mod.split(".")[0]
        assert root not in FORBIDDEN, f"{path.name} imports {mod}"
        if root == "esper_env":
            assert mod.startswith(ALLOWED_ESPER), f"{path.name} imports {mod} (outside the core)"
        else:
            assert root in sys.stdlib_module_names or root == "numpy", \
                f"{path.name} imports third-party {mod}"


def test_imported_modules_detects_torch() -> None:
    # the checker itself must see both import forms (guards against a vacuous walk)
    src = "import torch.nn as nn\nfrom torch import Tensor\nif False:\n    import gymnasium\n"
    assert imported_modules(src) == ["torch.nn", "torch", "gymnasium"]


def test_importing_core_and_config_does_not_import_torch() -> None:
    code = ("import sys\n"
            "import esper_env.core, esper_env.config, esper_env.errors, esper_env.tasks\n"
            "import esper_env.core.seeds, esper_env.core.reward, esper_env.core.observation\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def module_level_imports(source: str, filename: str = "<src>") -> list[str]:
    """Modules imported when ``source`` runs: its top-level imports (not in functions, not under
    ``if TYPE_CHECKING:``)."""  # noqa: D205
    names = []
    for node in ast.parse(source, filename=filename).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_task_files_found() -> None:
    assert {"__init__.py", "spec.py", "digits.py", "synthetic.py", "cifar10.py",
            "tinytext.py"} <= {p.name for p in TASK_FILES}


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.name)
def test_task_module_imports_torch_only_inside_its_loader_and_host_factory(path: Path) -> None:
    # The config validates against the task specs, so a task module's top level is pure; its
    # loader and host factory import torch (and the torch layer) when they are called.
    for mod in module_level_imports(path.read_text(), path.name):
        root = mod.split(".")[0]
        if root == "esper_env":
            assert mod.startswith(("esper_env.tasks", "esper_env.errors")), \
                f"{path.name} imports {mod} at import"
        else:
            assert root in sys.stdlib_module_names or root == "numpy", \
                f"{path.name} imports {mod} at import"


def test_module_level_imports_skip_functions_and_type_checking() -> None:
    src = ("import json\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
           "def f():\n    import numpy\n")
    assert module_level_imports(src) == ["json", "typing"]


def test_task_registry_answers_without_torch_and_its_loader_imports_it() -> None:
    code = ("import sys\n"
            "from esper_env.tasks import TASKS, task_spec\n"
            "assert task_spec('digits').n_classes == 10 and TASKS['tinytext'].spec.is_transformer\n"
            "print('torch' in sys.modules)\n"
            "from esper_env.nn.data import load_task\n"
            "load_task('synthetic', episode_seed=0, device='cpu')\n"
            "print('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["False", "True"]
