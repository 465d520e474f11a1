"""Naming benchmark: are the phases sigma finds named right from the default library?

Scenes: sigma's own simulator (``sem``: the 8-phase demo scene, 2x2 binned; ``tem``: the
5-phase TEM scene) and the independent simulator of ``tests/altmodel.py`` (``alt_eight``,
``alt_pair``, ``alt_rare``; other line tables, ionisation law, continuum and detector response).
For every scene it runs ``sigma.run`` (default config: autoencoder, automatic k, library
matching) and scores each cluster against the true phase that holds most of its pixels
(clusters under 70 % pure are counted as "mixed" and left out):

- ``right``: the name is the true phase, or one of the names of a polymorph / ambiguous group
  ("rutile/anatase", "hematite/magnetite", "mounting medium (epoxy/...)") is, or a named
  library entry has the true phase's composition (the library's "carbon" for the scene's
  "carbon film", "olivine (Fo90)" for "Fo90");
- ``unmatched``: "unmatched: ...";
- ``wrong``: any other name.

Compositions: the cluster's atomic fractions (``composition_at``) against the true phase's,
for elements above 1 at.%: median and max absolute error (at.%).

Speed (``--speed``): the analyse stage's naming and quantification alone, on the demo scene
(2x2 binned) with its true labels: ``identify_phases`` + ``quantify_results`` on the clusters'
core spectra, in a fresh process (cold: library, line tables and library predictions built) and
again (warm); seconds per phase. Target: < 0.3 s per phase, < 1.5 s in all.

Run: ``python benchmarks/naming.py [--scenes sem,tem]`` (writes benchmarks/results/naming.json)
or ``python benchmarks/naming.py --speed`` (writes benchmarks/results/naming_speed.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _paths import results_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RESULTS = results_dir()
SCENES = ("sem", "tem", "alt_eight", "alt_pair", "alt_rare")


def _scene(name: str) -> tuple[Any, Any, dict[str, dict[str, float]], dict[str, Any]]:
    """(cube, truth label map at the run's resolution, true compositions, run config)."""
    import sigma

    if name == "sem":
        ds, truth = sigma.datasets.demo_scene()
        comps = {p: sigma.datasets.PHASES[p].composition for p in truth.phase.values}
        return ds, truth, comps, {"bin_factor": 2}
    if name == "tem":
        ds, truth = sigma.datasets.synthetic_tem(seed=0, show_progress=False)
        comps = {p: sigma.datasets.PHASES[p].composition for p in truth.phase.values}
        return ds, truth, comps, {}
    import altmodel

    from sigma.phases import _parse_formula

    kind = name.split("_", 1)[1]
    ds, truth = altmodel.make_scene(kind, 30.0, seed=0)
    comps = {
        str(p): _parse_formula(altmodel.PHASE_FORMULAS[str(p)], str(p)) for p in truth.phase.values
    }
    return ds, truth, comps, {}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same visible composition (elements heavier than Li), within 1 wt% per element."""
    va = {k: v for k, v in a.items() if k not in ("H", "Li", "He")}
    vb = {k: v for k, v in b.items() if k not in ("H", "Li", "He")}
    if set(va) != set(vb):
        return False
    ta, tb = sum(va.values()), sum(vb.values())
    return all(abs(va[k] / ta - vb[k] / tb) <= 0.01 for k in va)


def _score_name(name: str, true: str, comp: dict[str, float], library: dict[str, Any]) -> str:
    if name.startswith("unmatched"):
        return "unmatched"
    inner = name.split("(", 1)[1].rstrip(")") if name.startswith("mounting medium (") else name
    names = [n.strip().rstrip(".") for n in inner.replace(" + ", "/").split("/")]
    if true in names:
        return "right"
    for n in names:
        if n in library and _same(library[n].composition, comp):
            return "right"
    return "wrong"


def run_scene(name: str) -> dict[str, Any]:
    import sigma
    from sigma.phases import load_library

    library = {e.name: e for e in load_library()}
    ds, truth, comps, cfg = _scene(name)
    t0 = time.perf_counter()
    res = sigma.run(ds, config=cfg, show_progress=False)
    seconds = time.perf_counter() - t0
    rds = res.dataset
    lab = rds["label"].values
    f = cfg.get("bin_factor", 1)
    tl = truth["label"].values[::f, ::f][: lab.shape[0], : lab.shape[1]]
    phases = [str(p) for p in truth.phase.values]
    rows = []
    for c in range(res.n_clusters):
        vals, cnt = np.unique(tl[lab == c], return_counts=True)
        if cnt.size == 0:
            continue
        true = phases[int(vals[np.argmax(cnt)])]
        purity = float(cnt.max() / cnt.sum())
        got = str(rds["cluster_name"].values[c])
        verdict = _score_name(got, true, comps[true], library) if purity >= 0.7 else "mixed"
        row: dict[str, Any] = {
            "cluster": c,
            "true": true,
            "purity": round(purity, 3),
            "name": got,
            "kind": str(rds["match_kind"].values[c]) if "match_kind" in rds else "",
            "confidence": float(rds["match_confidence"].values[c])
            if "match_confidence" in rds
            else None,
            "verdict": verdict,
        }
        if "composition_at" in rds and verdict != "mixed":
            row["composition_error_at_pct"] = _composition_error(rds, c, comps[true])
        rows.append(row)
    counted = [r for r in rows if r["verdict"] != "mixed"]
    summary = {v: sum(r["verdict"] == v for r in counted) for v in ("right", "unmatched", "wrong")}
    errs = [
        e for r in counted for e in (r.get("composition_error_at_pct") or {}).values() if e == e
    ]
    out = {
        "scene": name,
        "seconds": round(seconds, 1),
        "timings": json.loads(rds.attrs.get("timings", "{}")),
        "clusters": rows,
        "summary": summary,
        "n_true_phases": len(phases),
        "composition_error_at_pct": {
            "median": round(float(np.median(errs)), 2) if errs else None,
            "max": round(float(np.max(errs)), 2) if errs else None,
        },
    }
    return out


def _composition_error(rds: Any, c: int, comp: dict[str, float]) -> dict[str, float]:
    from sigma.datasets._phases import _atomic_mass

    atoms = {el: w / _atomic_mass(el) for el, w in comp.items() if el not in ("H", "Li")}
    total = sum(atoms.values())
    true_at = {el: v / total for el, v in atoms.items()}
    got = {
        str(el): float(v)
        for el, v in zip(rds["element"].values, rds["composition_at"].values[c], strict=True)
    }
    errs = {}
    for el in set(true_at) | {e for e, v in got.items() if v > 0.01}:
        t, g = true_at.get(el, 0.0), got.get(el, 0.0)
        if max(t, g) >= 0.01:
            errs[el] = round(100 * abs(g - t), 2)
    return errs


def speed() -> dict[str, Any]:
    """Seconds of naming + quantification of the demo scene's phases (see the module doc)."""
    import os

    import sigma
    from sigma.phases import core_spectra, identify_phases
    from sigma.quantify import quantify_results
    from sigma.results import SigmaResults

    ds, truth = sigma.datasets.demo_scene(show_progress=False)
    counts = ds["counts"].coarsen(y=2, x=2, boundary="trim").sum()
    label = truth["label"].values[::2, ::2][: counts.sizes["y"], : counts.sizes["x"]]
    k = int(label.max()) + 1
    res = SigmaResults(
        xr_dataset(counts, label, k, [str(p) for p in truth.phase.values], dict(ds.attrs))
    )
    runs = []
    for attempt in ("cold", "warm"):
        t0, c0 = time.perf_counter(), time.process_time()
        core = core_spectra(counts, label, k)
        named = identify_phases(res, spectra=core)
        t1 = time.perf_counter()
        quantify_results(named, spectra=core)
        t2, c2 = time.perf_counter(), time.process_time()
        runs.append(
            {
                "run": attempt,
                "naming_s": round(t1 - t0, 2),
                "quantify_s": round(t2 - t1, 2),
                "total_s": round(t2 - t0, 2),
                "cpu_s": round(c2 - c0, 2),
                "per_phase_s": round((t2 - t0) / k, 3),
            }
        )
    names = [str(v) for v in named.dataset["cluster_name"].values]
    return {
        "what": "identify_phases + quantify_results on the demo (bin 2, true labels)",
        "target": "< 0.3 s per phase or < 1.5 s in all",
        "n_phases": k,
        "names": names,
        "load_average": list(os.getloadavg()),
        "runs": runs,
    }


def xr_dataset(counts: Any, label: Any, k: int, phases: list[str], attrs: dict[str, Any]) -> Any:
    """A minimal results dataset: labels, cluster sums and the scan's attributes."""
    import xarray as xr

    from sigma.analysis import cluster_spectra

    spec = cluster_spectra(counts, label, n_clusters=k)
    out = xr.Dataset(
        {
            "label": (("y", "x"), label),
            "cluster_sum_spectrum": spec["cluster_sum_spectrum"],
            "cluster_name": ("cluster", np.array(phases, dtype=str)),
            "probability": (
                ("y", "x", "cluster"),
                (label[..., None] == np.arange(k)).astype(np.float32),
            ),
        },
        attrs={
            key: attrs[key]
            for key in ("beam_energy_kev", "energy_resolution_mnka_ev", "signal_type")
            if key in attrs
        },
    )
    return out.assign_coords(energy=counts["energy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", default=",".join(SCENES))
    p.add_argument("--speed", action="store_true", help="time naming alone (module doc)")
    args = p.parse_args()
    if args.speed:
        r = speed()
        print(json.dumps(r, indent=1))
        (RESULTS / "naming_speed.json").write_text(json.dumps(r, indent=1))
        return
    out = []
    for name in args.scenes.split(","):
        r = run_scene(name)
        out.append(r)
        print(name, r["summary"], r["composition_error_at_pct"], f"{r['seconds']} s")
        for row in r["clusters"]:
            print("   ", row)
    path = RESULTS / "naming.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print("written", path)


if __name__ == "__main__":
    main()
