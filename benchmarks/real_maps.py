"""Real-map benchmark: what ``sigma run`` defaults decide on the real files of ``shared/DATA.md``.

None of these files comes with a phase map, so there is no ARI: the table shows what a user
would check first (phases found against the range the element maps support, see
``tests/test_real_maps.py`` for the reasoning per file), the no-data fraction, the features
(elements) used and the run time. The files are HyperSpy's reader test files, fetched from PyPI
into the test-data cache by ``tests/realdata.py`` (network needed once).

Run: ``python benchmarks/real_maps.py [--files 30x30,P45] [--epochs N]``; writes
``results/real_maps.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _paths import results_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: short name -> (path under HyperSpy's tests/io, phases expected (min, max) or None, note)
FILES: dict[str, tuple[str, tuple[int, int] | None, str]] = {
    "30x30": (
        "bruker_data/30x30_instructively_packed_16bit_compressed.bcf",
        (5, 8),
        "Ti-Fe-REE grain, Ca-P grain, K band, Si band, Mg-Al matrix",
    ),
    "P45": ("bruker_data/P45_the_default_job.bcf", (2, 6), "Fe-rich grains, Al-rich areas in Si"),
    "test_TEM": ("bruker_data/test_TEM.bcf", None, "two zero-peak stripe columns: no phase"),
    "Hitachi": ("bruker_data/Hitachi_TM3030Plus.bcf", None, "79 % of pixels empty"),
    "bcf_v2": ("bruker_data/bcf_v2_50x50px.bcf", None, ""),
    "SuperX": ("emd_files/fei_emd_files.zip/fei_SI_SuperX-HAADF_10frames_10x50.emd", None, ""),
    "JEOL": (
        "JEOL_files/Sample/00_View000/View000_0000006.pts",
        None,
        "512 x 512 STEM map, 1.2 counts/px: sparse counts, split test on blocks",
    ),
}


def run_one(relpath: str, epochs: int | None) -> dict[str, Any]:
    import numpy as np
    from realdata import hyperspy_test_file

    import sigma

    ds = sigma.load(hyperspy_test_file(relpath))
    cfg: dict[str, Any] = {} if epochs is None else {"max_epochs": epochs}
    t0 = time.perf_counter()
    res = sigma.run(ds, config=cfg, show_progress=False)
    seconds = time.perf_counter() - t0
    label = np.asarray(res.dataset.label.values)
    return {
        "pixels": int(label.size),
        "counts_per_pixel": round(float(ds.counts.sum()) / label.size, 1),
        "phases": int(res.n_clusters),
        "no_data_percent": round(100.0 * float((label < 0).mean()), 1),
        "features": [str(f) for f in res.dataset.feature.values]
        if "feature" in res.dataset.coords
        else [],
        "names": [str(n) for n in res.dataset.cluster_name.values]
        if "cluster_name" in res.dataset
        else [],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", default=",".join(FILES), help="comma-separated short names")
    p.add_argument("--epochs", type=int, default=None, help="max_epochs (default: sigma's)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    report: dict[str, Any] = {}
    for name in args.files.split(","):
        relpath, expected, note = FILES[name]
        row = run_one(relpath, args.epochs)
        row.update(file=relpath, expected=expected, note=note)
        report[name] = row
        print(f"{name}: {row['phases']} phases, {row['no_data_percent']} % no data", flush=True)
    out = args.out or results_dir() / "real_maps.json"
    out.write_text(json.dumps(report, indent=2))
    print(
        "\n| file | px | counts/px | phases (expected) | no data | features | time |"
        "\n|---|---|---|---|---|---|---|"
    )
    for name, r in report.items():
        exp = "" if r["expected"] is None else f" ({r['expected'][0]}-{r['expected'][1]})"
        print(
            f"| {name} | {r['pixels']} | {r['counts_per_pixel']:g} | {r['phases']}{exp} | "
            f"{r['no_data_percent']:g} % | {', '.join(r['features'])} | {r['seconds']:g} s |"
        )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
