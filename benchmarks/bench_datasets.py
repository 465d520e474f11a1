"""Benchmark of the synthetic data generator (sigma.datasets).

Run: ``.venv/bin/python benchmarks/bench_datasets.py [--big]``. Prints wall and CPU time, peak
RSS, and the mean counts per pixel for the demo scene at several count levels, a lazy
(dask-chunked) cube, and with ``--big`` a 1024 x 1024 x 2048 chunked cube computed chunk by chunk.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import sigma.datasets as sd


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(label: str, func, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"{label:48s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  peak RSS {_rss_mb():7.0f} MB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", action="store_true", help="also a 1024x1024x2048 chunked cube")
    args = parser.parse_args()
    _timed("warm-up: synthetic_cube() (xraydb tables)", sd.synthetic_cube)
    _timed("synthetic_cube() cached", sd.synthetic_cube)
    for level in (5, 30, 500, 10_000):
        ds, truth = _timed(
            f"demo_scene(counts_per_pixel={level})",
            sd.demo_scene,
            counts_per_pixel=level,
            show_progress=False,
        )
        mean = float(ds.counts.sum("energy").mean())
        print(f"    mean counts/pixel {mean:.2f} (asked {level}), dtype {ds.counts.dtype}")
        del ds, truth
    ds, _ = _timed("demo_scene(chunks=(70, 128)) build (lazy)", sd.demo_scene, chunks=(70, 128))
    counts = _timed("  ... compute", ds.counts.data.compute)
    print(f"    mean counts/pixel {counts.sum(axis=2).mean():.2f}")
    if args.big:
        ds, _ = _timed(
            "synthetic_sem((1024, 1024), chunks=256) build",
            sd.synthetic_sem,
            (1024, 1024),
            chunks=(256, 256),
        )
        total = _timed("  ... sum over energy, chunk by chunk", ds.counts.sum("energy").to_numpy)
        print(f"    mean counts/pixel {np.mean(total):.2f}")


if __name__ == "__main__":
    main()
