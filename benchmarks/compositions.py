"""Composition benchmark: quantify single-phase spectra of known composition.

Two sources of spectra, each quantified by ``sigma.quantify.quantify_spectrum`` (standardless
ZA for bulk, Cliff-Lorimer for thin films) with the elements found in the spectrum:

- ``sigma``: sigma's own simulator (:func:`sigma.datasets.phase_spectrum`), the SEM demo's
  phases at 15 kV (bulk) and the TEM phases at 200 kV (thin), 10^6 counts;
- ``alt``: the independent simulator of ``tests/altmodel.py`` (Green-Cosslett generation,
  xraylib tables, another window and detector response), its 11 mineral phases (epoxy, whose
  C/O ratio hinges on the window, is reported apart) at 20 kV, 10^6 counts.

The error of each element above 1 at.% is ``measured - true`` in at.% (H left out of the
truth: it has no line). Prints and writes ``benchmarks/results/compositions.json``.

Run: ``python benchmarks/compositions.py [--counts 1e6] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _paths import results_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SEM_PHASES = ("quartz", "albite", "orthoclase", "calcite", "hematite", "ilmenite", "rutile")
TEM_PHASES = ("FePt", "tenorite")


def _atomic(weight: dict[str, float], mass: Any) -> dict[str, float]:
    at = {el: w / mass(el) for el, w in weight.items() if el != "H"}
    total = sum(at.values())
    return {el: v / total for el, v in at.items()}


def _errors(measured: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    return {
        el: round(100 * (measured.get(el, 0.0) - v), 2)
        for el, v in sorted(truth.items(), key=lambda kv: -kv[1])
        if v >= 0.01
    }


def _sigma_rows(total: float, seed: int) -> list[dict[str, Any]]:
    from sigma.datasets import PHASES, phase_spectrum
    from sigma.datasets._phases import _atomic_mass
    from sigma.quantify import quantify_spectrum

    energy = np.arange(2048) * 0.01
    rows = []
    for names, beam, geometry in ((SEM_PHASES, 15.0, "bulk"), (TEM_PHASES, 200.0, "thin")):
        for name in names:
            s = phase_spectrum(PHASES[name], energy, beam_energy_kev=beam, geometry=geometry)
            counts = np.random.default_rng(seed).poisson(s * total).astype(np.float64)
            comp = quantify_spectrum(counts, energy, beam_energy_kev=beam, geometry=geometry)
            truth = _atomic(dict(PHASES[name].composition), _atomic_mass)
            rows.append(
                {"phase": name, "geometry": geometry, "error_at_pct": _errors(comp.atomic, truth)}
            )
    return rows


def _alt_rows(total: float, seed: int) -> list[dict[str, Any]]:
    import altmodel

    from sigma.quantify import quantify_spectrum

    xl = altmodel._xl()
    energy = altmodel._energy()
    rows = []
    for name, formula in altmodel.PHASE_FORMULAS.items():
        spec, _, _ = altmodel.phase_spectrum(formula)
        counts = np.random.default_rng(seed).poisson(spec * total).astype(np.float64)
        comp = quantify_spectrum(
            counts,
            energy,
            beam_energy_kev=altmodel.BEAM_KV,
            mnka_resolution_ev=altmodel.MNKA_FWHM_EV,
        )
        weight = {xl.AtomicNumberToSymbol(z): w for z, w in altmodel.composition(formula).items()}
        truth = _atomic(weight, lambda el: xl.AtomicWeight(xl.SymbolToAtomicNumber(el)))
        rows.append(
            {"phase": name, "geometry": "bulk", "error_at_pct": _errors(comp.atomic, truth)}
        )
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    errs = [abs(e) for r in rows for e in r["error_at_pct"].values()]
    o = [abs(r["error_at_pct"]["O"]) for r in rows if "O" in r["error_at_pct"]]
    return {
        "median_abs_at_pct": round(float(np.median(errs)), 2),
        "max_abs_at_pct": round(float(max(errs)), 2),
        "max_abs_O_at_pct": round(float(max(o, default=0.0)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=float, default=1e6, help="counts per spectrum")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sigma_rows = _sigma_rows(args.counts, args.seed)
    alt_rows = _alt_rows(args.counts, args.seed)
    alt_minerals = [r for r in alt_rows if r["phase"] != "epoxy"]
    out = {
        "counts": args.counts,
        "seed": args.seed,
        "sigma": {"summary": _summary(sigma_rows), "phases": sigma_rows},
        "alt": {"summary": _summary(alt_minerals), "phases": alt_rows},
    }
    for key in ("sigma", "alt"):
        print(key, out[key]["summary"])
        for r in out[key]["phases"]:
            print("   ", r["phase"], r["error_at_pct"])
    path = results_dir() / "compositions.json"
    path.write_text(json.dumps(out, indent=1))
    print("written", path)


if __name__ == "__main__":
    main()
