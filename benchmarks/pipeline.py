"""End-to-end `sigma run --bin 2` on the demo-size cube (280 x 512 x 2048), as a user runs it.

Issue 5's target: under 20 s wall and under 1.5 GB peak RSS on the 2-core CPU (the SIGMA
notebook pipeline: about 37 s with 3 epochs, 3.7 GB). Each run is a fresh ``sigma`` process, so
the wall time includes Python start-up and every import; the peak RSS is the child's
``ru_maxrss`` (from ``os.wait4``). The stage times and the peak RSS after each stage come from the results file
(``attrs["timings"]``, ``attrs["peak_rss_mb"]``).

Run:  .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--lazy]
Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _paths import results_dir

OUT = results_dir() / "pipeline.json"


def demo_file(folder: Path) -> Path:
    """The demo scene saved as NetCDF (what `sigma demo` simulates).

    Written by a child process: Linux carries a process's peak RSS across fork+exec into its
    children, so this (small) parent must never hold a cube itself.
    """
    path = folder / "demo_cube.nc"
    code = (
        "import sys, sigma; from sigma.datasets import demo_scene; "
        "sigma.save(demo_scene(show_progress=False)[0], sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def _result_attrs(path: Path) -> dict[str, Any]:
    """timings, peak_rss_mb and the number of clusters of a results file (read in a child)."""
    code = (
        "import json, sys, xarray as xr\n"
        "with xr.open_dataset(sys.argv[1], engine='h5netcdf') as ds:\n"
        "    print(json.dumps({'timings': json.loads(ds.attrs['timings']),\n"
        "        'rss': json.loads(ds.attrs.get('peak_rss_mb', '{}')),\n"
        "        'n_clusters': int(ds.sizes['cluster'])}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout))


def one_run(cube: Path, folder: Path, lazy: bool, extra: list[str]) -> dict[str, Any]:
    """One fresh `sigma run` process: wall time, peak RSS, the stage times it recorded."""
    out = folder / "res.nc"
    if out.exists():
        out.unlink()
    exe = Path(sys.executable).with_name("sigma")
    # an uninstalled checkout (e.g. a GPU machine with PYTHONPATH set) has no console script
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "sigma.cli"]
    cmd = [*launcher, "run", str(cube), "--bin", "2", "--quiet", "--out", str(out), *extra]
    if lazy:
        cmd.append("--lazy")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    # wait4 gives this child's own usage; ru_maxrss is its peak RSS in KiB (Linux)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"sigma run failed:\n{output}")
    attrs = _result_attrs(out)
    timings, rss, n_clusters = attrs["timings"], attrs["rss"], attrs["n_clusters"]
    return {
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": usage.ru_maxrss / 1024**2,
        "stage_s": timings,
        "stage_peak_rss_mb": rss,
        "outside_stages_s": wall - sum(timings.values()),
        "n_clusters": n_clusters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--lazy", action="store_true", help="also time `sigma run --lazy`")
    parser.add_argument(
        "--accelerator", default=None, help="passed to `sigma run --accelerator` (cpu, gpu)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to write")
    args = parser.parse_args()
    extra = [] if args.accelerator is None else ["--accelerator", args.accelerator]

    results: dict[str, Any] = {
        "target": "under 20 s wall and 1.5 GB peak RSS on the 2-core CPU",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "accelerator": args.accelerator or "auto (sigma run's default)",
            "load_average_at_start": os.getloadavg(),
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cube = demo_file(folder)
        results["input"] = {"file": cube.name, "bytes_on_disk": cube.stat().st_size,
                            "shape": [280, 512, 2048]}  # fmt: skip
        modes = [False, True] if args.lazy else [False]
        for lazy in modes:
            for i in range(args.repeats):
                r = one_run(cube, folder, lazy, extra)
                r["lazy"] = lazy
                print(
                    f"{'lazy ' if lazy else 'eager'} run {i + 1}: {r['wall_s']:.1f} s wall, "
                    f"{r['peak_rss_gb']:.2f} GB peak, stages "
                    + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items())
                    + f", outside stages {r['outside_stages_s']:.1f} s",
                    flush=True,
                )
                results["runs"].append(r)
    for lazy in sorted({r["lazy"] for r in results["runs"]}):
        rows = [r for r in results["runs"] if r["lazy"] == lazy]
        best = min(rows, key=lambda r: r["wall_s"])
        results["lazy" if lazy else "eager"] = {
            "best_wall_s": best["wall_s"],
            "median_wall_s": sorted(r["wall_s"] for r in rows)[len(rows) // 2],
            "max_peak_rss_gb": max(r["peak_rss_gb"] for r in rows),
            "best_run_stage_s": best["stage_s"],
        }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
