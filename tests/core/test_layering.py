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
ALLOWED_ESPER = ("esper_env.core", "esper_env.config", "esper_env.errors")


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
            "import esper_env.core, esper_env.config, esper_env.errors\n"
            "import esper_env.core.seeds, esper_env.core.reward, esper_env.core.observation\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
