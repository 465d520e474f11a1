"""Runtime helpers of a pipeline run: stage timing and peak memory, background imports, quiet logs."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("sigma.pipeline")

__all__ = [
    "StageTimer",
    "import_in_background",
    "quiet_lightning",
    "peak_rss_mb",
    "usable_cpus",
    "blocks_in_threads",
]


class StageTimer:
    """Wall time of each named stage, in order; used for the printed summary and the results attrs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        #: peak resident memory of this process (MB) at the end of each stage
        self.peak_rss_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        logger.info("%s ...", name)
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0
            self.peak_rss_mb[name] = peak_rss_mb()
            logger.info(
                "%s done in %.2f s (peak RSS %.0f MB)",
                name,
                self.seconds[name],
                self.peak_rss_mb[name],
            )

    @property
    def total(self) -> float:
        """Sum of all stages in seconds."""
        return float(sum(self.seconds.values()))


#: imported by a background thread while the data loads (Lightning alone takes 4-5 s of CPU)
TRAINING_MODULES = ("lightning.pytorch", "sklearn.mixture")


def import_in_background(modules: tuple[str, ...]) -> None:
    """Start importing ``modules`` in a daemon thread so the import overlaps reading the file.

    The file read (HDF5 decompression, numpy binning) leaves the interpreter idle for part of
    its time; on the 2-core CPU the overlap took 3-5 s off a 20 s ``sigma run`` of the demo cube
    (benchmarks/pipeline.py). Only third-party packages are listed; a module both threads need
    is imported once, the other thread waiting on Python's per-module import lock. Any failure
    is ignored here: the real import later raises it.
    """
    import importlib
    import sys
    import threading

    todo = [m for m in modules if m not in sys.modules]
    if not todo:
        return

    def work() -> None:
        for name in todo:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the import in the main thread reports it
                logger.debug("background import of %s failed", name, exc_info=True)

    threading.Thread(target=work, name="sigma-imports", daemon=True).start()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    import sys

    return float(peak) / (1024.0**2 if sys.platform == "darwin" else 1024.0)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up banner and two known-harmless warnings during a pipeline run.

    The banner ("GPU available ...", tips) is INFO on Lightning's rank-zero logger; the warnings
    are about ``__len__`` on our slicing batch source (documented in sigma.datamodule) and a
    torch pytree deprecation inside Lightning. Everything else still shows.
    """
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def usable_cpus(cap: int = 8) -> int:
    """CPUs this process may use (its affinity where the OS tells it), at most ``cap``."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(cap, n))


def blocks_in_threads(block: Any, starts: range, min_blocks: int = 8) -> None:
    """``block(start)`` for every start, split between the process's CPUs in threads.

    For blocks that write disjoint parts of one output with numpy or scipy operations that
    release the GIL. Fewer than ``min_blocks`` blocks per thread run in this thread (threads
    would cost more than they save).
    """
    n = min(usable_cpus(), len(starts) // min_blocks)
    if n <= 1:
        for start in starts:
            block(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(share: range) -> None:
        for start in share:
            block(start)

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(run, [starts[i::n] for i in range(n)]))
