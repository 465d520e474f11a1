"""Benchmark of sigma.preprocessing: time and peak RSS per step, per cube size.

Each size runs in a fresh subprocess (so peak RSS is that of one size only). Cubes are synthetic
uint16 ``(n, n, 2048)`` spectrum images with ~30 counts per pixel (two phases, X-ray lines on a
continuum), generated photon by photon block by block (never as a float cube). numpy-backed cubes
for 256 and 512; a dask-backed 1024 x 1024 x 2048 cube (4 GiB as uint16) generated lazily
chunk by chunk and pushed through the whole SIGMA chain without ever being held in memory.

Peak RSS of a step is sampled every 2 ms by a thread (psutil) while the step runs; "extra" is the
peak minus the RSS just before the step. The whole-chain ratio is
``(peak RSS during the chain - RSS before the cube existed) / cube bytes``.

Usage::

    python benchmarks/preprocessing.py                    # all sizes, writes the JSON and a table
    python benchmarks/preprocessing.py --sizes 256        # quick
    python benchmarks/preprocessing.py --worker 512 numpy # one size in this process (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _paths import results_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = results_dir() / "preprocessing.json"
N_CHANNELS = 2048
SCALE_KEV = 0.01
COUNTS_PER_PIXEL = 30.0
LINES = [
    "C_Ka",
    "O_Ka",
    "Na_Ka",
    "Al_Ka",
    "Si_Ka",
    "K_Ka",
    "Ca_Ka",
    "Ti_Ka",
    "Fe_Ka",
    "Fe_Kb",
    "Cu_Ka",
]


# --------------------------------------------------------------------------- data


def _phase_probabilities() -> np.ndarray:
    """Two channel-probability spectra (2, n_channels): continuum + lines of two phases."""
    from sigma.xray import element_lines, fwhm_kev

    e = np.arange(N_CHANNELS) * SCALE_KEV
    cont = np.clip(15.0 - e, 0, None) / 15.0 * np.exp(-0.6 / np.maximum(e, 0.05))
    out = []
    for elements in (
        {"O": 3, "Si": 4, "Al": 1, "Na": 0.5, "K": 0.5, "C": 0.5},
        {"O": 2, "Fe": 5, "Ti": 1, "Ca": 1, "Cu": 0.5, "C": 0.5},
    ):
        y = cont.copy()
        for el, amount in elements.items():
            for line in element_lines(el).values():
                if line.energy_kev < 15.0:
                    s = float(fwhm_kev(line.energy_kev)) / 2.3548
                    y += (
                        amount
                        * line.weight
                        * 0.05
                        * np.exp(-0.5 * ((e - line.energy_kev) / s) ** 2)
                    )
        y[:8] += 0.05  # noise peak
        out.append(y / y.sum())
    return np.asarray(out)


def _fill_rows(out: np.ndarray, row0: int, n_total_rows: int, seed: int, probs: np.ndarray) -> None:
    """Fill ``out`` (rows, nx, ne) uint16 (C-contiguous) with Poisson photons (sparse scatter)."""
    rng = np.random.default_rng([seed, row0])
    rows, nx, ne = out.shape
    cdfs = np.cumsum(probs, axis=1)
    cdfs /= cdfs[:, -1:]
    flat = out.reshape(-1)
    flat[:] = 0
    n_pix = rows * nx
    n = rng.poisson(COUNTS_PER_PIXEL, n_pix)
    pix = np.repeat(np.arange(n_pix, dtype=np.int64), n)
    phase = ((pix % nx) >= nx // 2).astype(np.int64)
    ch = np.empty(pix.size, dtype=np.int64)
    u = rng.random(pix.size)
    for p in (0, 1):
        sel = phase == p
        ch[sel] = np.searchsorted(cdfs[p], u[sel], side="right")
    np.minimum(ch, ne - 1, out=ch)
    idx, cnt = np.unique(pix * ne + ch, return_counts=True)
    flat[idx] = cnt.astype(np.uint16)


def numpy_cube(n: int, seed: int = 0) -> Any:
    from sigma._schema import make_spectrum_image

    probs = _phase_probabilities()
    counts = np.empty((n, n, N_CHANNELS), dtype=np.uint16)
    for r in range(0, n, 64):
        _fill_rows(counts[r : r + 64], r, n, seed, probs)
    return make_spectrum_image(counts, energy_scale_kev=SCALE_KEV, attrs={"beam_energy_kev": 15.0})


def dask_cube(n: int, chunk_rows: int = 32, seed: int = 0) -> Any:
    import dask.array as da

    from sigma._schema import make_spectrum_image

    probs = _phase_probabilities()

    def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (r0, r1), (_c0, _c1), _ = block_info[None]["array-location"]
        out = np.empty((r1 - r0, n, N_CHANNELS), dtype=np.uint16)
        _fill_rows(out, r0, n, seed, probs)
        return out

    counts = da.map_blocks(
        block, dtype=np.uint16, chunks=((chunk_rows,) * (n // chunk_rows), (n,), (N_CHANNELS,))
    )
    return make_spectrum_image(counts, energy_scale_kev=SCALE_KEV, attrs={"beam_energy_kev": 15.0})


# --------------------------------------------------------------------------- measuring


class PeakRSS:
    """Sample this process's RSS every ``interval`` s in a thread; ``peak`` after ``stop``."""

    def __init__(self, interval: float = 0.002) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.start_rss = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def measure(
    name: str, func: Callable[[], Any], results: list[dict[str, Any]], repeat: int = 1
) -> Any:
    best = best_cpu = np.inf
    out = None
    for _ in range(repeat):
        with PeakRSS() as rss:
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = func()
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
        best = min(best, dt)
        best_cpu = min(best_cpu, dc)
    results.append(
        {
            "step": name,
            "seconds": round(best, 4),
            "cpu_seconds": round(best_cpu, 4),
            "peak_rss_mib": round(rss.peak / 2**20, 1),
            "extra_rss_mib": round((rss.peak - rss.start_rss) / 2**20, 1),
        }
    )
    print(
        f"  {name:<44} {best:8.3f} s (cpu {best_cpu:7.3f} s)  "
        f"peak {rss.peak / 2**20:8.1f} MiB  extra "
        f"{(rss.peak - rss.start_rss) / 2**20:8.1f} MiB",
        file=sys.stderr,
        flush=True,
    )
    return out


def worker(n: int, mode: str) -> dict[str, Any]:
    import dask

    from sigma import preprocessing as pp

    proc = psutil.Process()
    base = proc.memory_info().rss
    res: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "size": n,
        "channels": N_CHANNELS,
        "mode": mode,
        "baseline_rss_mib": round(base / 2**20, 1),
    }
    cube_bytes = n * n * N_CHANNELS * 2
    info["cube_mib"] = round(cube_bytes / 2**20, 1)
    chain = pp.Preprocessor.sigma_default(lines=LINES)
    if mode == "numpy":
        ds = measure("generate cube (not preprocessing)", lambda: numpy_cube(n), res)
        info["mean_counts_per_pixel"] = round(float(ds.counts.sum(dtype=np.int64)) / (n * n), 2)
        before_chain = proc.memory_info().rss
        feats = measure("Preprocessor.sigma_default (whole chain)", lambda: chain(ds), res)
        chain_peak = res[-1]["peak_rss_mib"] * 2**20
        info["chain_peak_over_cube"] = round((chain_peak - base) / cube_bytes, 3)
        info["chain_extra_over_cube"] = round((chain_peak - before_chain) / cube_bytes, 3)
        measure(
            "total counts (sum over energy)",
            lambda: ds.counts.sum("energy", dtype=np.int64).values,
            res,
        )
        measure(
            f"line_features ({len(LINES)} lines, normalize)",
            lambda: pp.line_features(ds, LINES, normalize=True, ignore_below_kev=0.1),
            res,
            repeat=2,
        )
        measure(
            f"line_features ({len(LINES)} lines, background)",
            lambda: pp.line_features(ds, LINES, background=True),
            res,
        )
        found = measure("line_features (lines='auto')", lambda: pp.line_features(ds, "auto"), res)
        info["auto_lines"] = [str(v) for v in found.feature.values]
        measure("bin_spatial (2, 2)", lambda: pp.bin_spatial(ds, (2, 2)), res)
        measure("rebin_energy 2", lambda: pp.rebin_energy(ds, 2), res)
        measure("crop_energy 0.1-10 keV (view)", lambda: pp.crop_energy(ds, 0.1, 10.0), res)
        measure("remove_noise_peak (integer copy)", lambda: pp.remove_noise_peak(ds, 0.1), res)
        if n <= 256:
            measure(
                "normalize_total (float32 cube, standalone)", lambda: pp.normalize_total(ds), res
            )
            measure("pca_features 8 (Poisson, covariance)", lambda: pp.pca_features(ds, 8), res)
        f = feats.features
        rng = np.random.default_rng(0)
        f16 = f.isel(feature=[k % f.sizes["feature"] for k in range(16)]).copy(
            data=rng.random((n, n, 16), dtype=np.float32)
        )
        f16 = f16.assign_coords(feature=[f"f{k}" for k in range(16)])
        fds = (
            feats.drop_vars(["line_energy", "window_lo", "window_hi"])
            .drop_dims("feature")
            .assign(features=f16)
        )
        measure(
            f"neighbor_average mean3x3 ({n}x{n}x16)",
            lambda: pp.neighbor_average(fds),
            res,
            repeat=3,
        )
        measure(
            f"neighbor_average gaussian s=1 ({n}x{n}x16)",
            lambda: pp.neighbor_average(fds, kind="gaussian"),
            res,
            repeat=3,
        )
        measure(f"zscore ({n}x{n}x16)", lambda: pp.zscore(fds), res, repeat=3)
        measure(f"softmax ({n}x{n}x16)", lambda: pp.softmax(fds), res, repeat=3)
    else:
        ds = dask_cube(n)
        info["chunks"] = str(ds.counts.data.chunksize)
        with dask.config.set(scheduler="threads", num_workers=2):
            feats = measure("Preprocessor.sigma_default (lazy graph)", lambda: chain(ds), res)
            assert "dask" in type(feats.features.data).__module__
            out = measure(
                "compute features (whole chain, dask)", lambda: feats.features.values, res
            )
            chain_peak = res[-1]["peak_rss_mib"] * 2**20
            info["chain_peak_over_cube"] = round((chain_peak - base) / cube_bytes, 3)
            info["chain_peak_rss_mib"] = res[-1]["peak_rss_mib"]
            info["features_finite"] = bool(np.isfinite(out).all())
            measure(
                "generate cube only (sum of chunks)",
                lambda: ds.counts.data.sum(dtype=np.int64).compute(),
                res,
            )
    info["steps"] = res
    return info


# --------------------------------------------------------------------------- driver


def _table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| size | backend | step | wall (s) | CPU (s) | peak RSS (MiB) | extra RSS (MiB) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        for st in run["steps"]:
            lines.append(
                f"| {run['size']}x{run['size']}x{run['channels']} | {run['mode']} | {st['step']} | "
                f"{st['seconds']:.3f} | {st.get('cpu_seconds', float('nan')):.3f} | "
                f"{st['peak_rss_mib']:.0f} | {st['extra_rss_mib']:.0f} |"
            )
    lines.append("")
    lines.append("| size | backend | cube (MiB) | whole-chain peak RSS / cube | notes |")
    lines.append("|---|---|---:|---:|---|")
    for run in runs:
        note = (
            f"extra over cube {run['chain_extra_over_cube']}"
            if "chain_extra_over_cube" in run
            else (f"peak {run.get('chain_peak_rss_mib')} MiB, chunks {run.get('chunks')}")
        )
        lines.append(
            f"| {run['size']} | {run['mode']} | {run['cube_mib']} | "
            f"{run['chain_peak_over_cube']} | {note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--dask-from", type=int, default=1024, help="sizes >= this run dask-backed")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1])))
        return 0
    runs = []
    for n in args.sizes:
        mode = "dask" if n >= args.dask_from else "numpy"
        print(f"size {n} ({mode})", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(n), mode],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print(f"size {n} failed (exit {proc.returncode})", file=sys.stderr)
            continue
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(v, 2) for v in load],
        "note": "shared 2-core machine; other jobs ran at the same time, so times are inflated",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    print(_table(runs))
    print(f"\nload average during the run: {load}; results in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
