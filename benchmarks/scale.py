"""Scale benchmark: time per stage and peak RSS of the whole pipeline against image size.

Each size runs in a fresh subprocess (so peak RSS is that run's own): a synthetic uint16 cube of
N x N pixels x 2048 channels at 30 counts/px is written once to chunked Zarr (the format
``sigma convert`` produces), then ``sigma.run`` reads it lazily and goes through the whole
pipeline (binning 2x2, line features, training, encoding, clustering, analysis, save).

Run: ``python benchmarks/scale.py [--sizes 128,256,512,1024] [--epochs 10]``; writes
benchmarks/results/scale.json and prints a Markdown table with the growth exponent of time in
the number of pixels (1.0 = linear).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _paths import results_dir

RESULTS = results_dir()


def _child(size: int, workdir: str, epochs: int) -> None:
    """Runs in the subprocess: make the cube (lazily, chunk by chunk), then time sigma.run."""
    from sigma.datasets import synthetic_sem
    from sigma.io import open_dataset, save
    from sigma.pipeline import run

    path = Path(workdir) / f"cube_{size}.zarr"
    t0 = time.perf_counter()
    ds, _ = synthetic_sem(
        (size, size), chunks=(min(size, 256), min(size, 256)), show_progress=False
    )
    save(ds, path)
    t_make = time.perf_counter() - t0
    rss_make = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lazy = open_dataset(path, lazy=True)
    t0 = time.perf_counter()
    res = run(
        lazy,
        config={"bin_factor": 2, "max_epochs": epochs},
        out=Path(workdir) / f"res_{size}.nc",
        show_progress=False,
    )
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    raw_mb = size * size * 2048 * 2 / 2**20
    print(
        json.dumps(
            {
                "size": size,
                "pixels": size * size,
                "raw_cube_mib": round(raw_mb, 1),
                "make_cube_s": round(t_make, 2),
                "peak_rss_after_make_mib": round(rss_make, 1),
                "wall_s": round(wall, 2),
                "peak_rss_mib": round(rss, 1),
                "timings": json.loads(res.dataset.attrs["timings"]),
                "k_found": int(res.dataset.sizes["cluster"]),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="128,256,512,1024")
    p.add_argument("--epochs", type=int, default=10, help="fixed epoch budget so sizes compare")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.workdir, args.epochs)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(size),
                "--workdir",
                tmp,
                "--epochs",
                str(args.epochs),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"size {size} failed")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        px = np.log([r["pixels"] for r in rows])
        wall = np.log([r["wall_s"] for r in rows])
        exponent = float(np.polyfit(px, wall, 1)[0])
    else:
        exponent = float("nan")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(
        json.dumps({"rows": rows, "time_exponent_in_pixels": exponent}, indent=2)
    )
    stages = list(rows[0]["timings"])
    print(
        "\n| pixels | raw cube MiB | "
        + " | ".join(f"{s} s" for s in stages)
        + " | total s | peak RSS MiB |"
    )
    print("|---" * (len(stages) + 4) + "|")
    for r in rows:
        print(
            f"| {r['size']}^2 | {r['raw_cube_mib']} | "
            + " | ".join(f"{r['timings'].get(s, 0):.2f}" for s in stages)
            + f" | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    print(f"\ntime grows as pixels^{exponent:.2f}")


if __name__ == "__main__":
    main()
