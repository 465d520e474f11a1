"""Where the benchmark scripts write their JSON: ``benchmarks/results/``, or the folder named by
``$SIGMA_BENCH_RESULTS``. ``run_all.py --quick`` points it at ``benchmarks/results/quick/`` so a
quick run (small sizes) never overwrites the full results the README quotes."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "SIGMA_BENCH_RESULTS"


def results_dir() -> Path:
    """The results folder (created if missing)."""
    folder = Path(os.environ.get(ENV) or Path(__file__).resolve().parent / "results")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
