"""Run folders: what esper-train writes, and how esper-eval and esper-bench read a run back.

A run folder holds ``args.json`` (the :class:`agents.train.TrainArgs`), ``env_config.json`` (the
:class:`agents.envs.EnvSpec` of the exact env), ``hyperparams.yml`` (the resolved table),
``model.zip`` and ``best_model.zip``, ``evaluations.json``, ``train_stats.json`` (timesteps, wall
time, provenance), and with a curriculum ``curriculum.json`` and ``best_curriculum.json``;
``vecnormalize.pkl`` when rewards were normalized; ``tb/`` for TensorBoard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.algos import algo_class
from agents.envs import EnvSpec


def run_folder(run: str | Path) -> Path:
    """The folder of a run given as its folder or as a ``.zip`` inside it."""
    path = Path(run)
    return path.parent if path.suffix == ".zip" else path


def open_run_folder(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out`` for a new run; refuse one that already holds a model unless ``overwrite``."""
    out = Path(out)
    if (out / "model.zip").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite or another --output")
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_run_config(out: Path, args: dict[str, Any], spec: EnvSpec, hyperparams: dict[str, Any],
                    env_id: str = "Esper-v0") -> None:
    """Write ``args.json``, ``env_config.json`` and ``hyperparams.yml`` (before training starts)."""
    import yaml

    (out / "args.json").write_text(json.dumps(args, indent=1, sort_keys=True) + "\n")
    spec.save(out / "env_config.json")
    (out / "hyperparams.yml").write_text(yaml.safe_dump({env_id: hyperparams}, sort_keys=True))


def save_train_stats(out: Path, stats: dict[str, Any]) -> None:
    """Write ``train_stats.json``."""
    (out / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")


def save_curriculum(curriculum: Any, path: Path) -> None:
    """Write a curriculum's ``state_dict()`` as JSON."""
    path.write_text(json.dumps(curriculum.state_dict(), indent=1, sort_keys=True) + "\n")


def load_model(run: str | Path, which: str = "best", device: str = "cpu") -> tuple[Any, EnvSpec]:
    """Load a saved agent and the spec of its env from an esper-train run folder.

    Args:
        run: the run folder (or a ``.zip`` inside one).
        which: ``best`` (``best_model.zip``, falling back to ``model.zip``) or ``final``.
        device: torch device of the loaded model.
    """
    path = Path(run)
    folder = run_folder(path)
    meta_path = folder / "args.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not an esper-train run folder (no args.json)")
    meta = json.loads(meta_path.read_text())
    if path.suffix == ".zip":
        zip_path = path
    else:
        zip_path = folder / ("best_model.zip" if which == "best" else "model.zip")
        if not zip_path.exists():
            zip_path = folder / "model.zip"
    cls = algo_class(meta["algo"], meta["policy_mask"])
    return cls.load(zip_path, device=device), EnvSpec.load(folder / "env_config.json")


def load_curriculum(run: str | Path, which: str = "best") -> Any:
    """The curriculum saved with a run's best (``best_curriculum.json``) or final model, or None."""
    from agents.curriculum import BlueprintCurriculum

    folder = run_folder(run)
    names = ["best_curriculum.json", "curriculum.json"] if which == "best" else ["curriculum.json"]
    for name in names:
        if (folder / name).exists():
            return BlueprintCurriculum.from_state_dict(json.loads((folder / name).read_text()))
    return None
