"""MkDocs hooks: publish the benchmark pictures of ``benchmarks/results`` under ``results/``.

The pictures stay where the benchmarks write them; the pages link ``results/<run>/<name>.png``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files: Files, config, **kwargs) -> Files:  # noqa: D103
    for path in sorted(RESULTS.rglob("*.png")):
        files.append(File.generated(config, f"results/{path.relative_to(RESULTS).as_posix()}",
                                    abs_src_path=str(path)))
    return files
