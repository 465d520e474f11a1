"""Quality benchmark: sigma against baselines on synthetic scenes with ground truth.

Scenes (sigma.datasets.synthetic_sem, 8 phases, 280 x 512 px x 2048 channels, 15 kV):
``demo30`` (30 counts/px), ``demo10``, ``demo200``, and ``blur30`` (mixed boundary pixels,
Gaussian blur of 1.5 px). Methods, all on the same 2x2-binned cube:

- ``sigma``: the full pipeline with the automatic number of phases (its default
  ``refine="pca"``: phases found in the latent, pixels reassigned in Poisson-PCA space);
- ``sigma_latent_only``: the same run's latent clustered alone (``refine="none"``);
- ``pca_kmeans``: Poisson-scaled PCA (8 components) + k-means with the TRUE k;
- ``nmf_argmax``: NMF of the line features with the TRUE k, label = argmax of the weights;
- ``gmm_features``: Gaussian mixture directly on the (z-scored) line features with the TRUE k.

Scores: adjusted Rand index of the phase map at full resolution (binned labels repeated 2x2)
against the true label map, and the mean per-phase cosine similarity between each true pure-phase
spectrum and the mean raw spectrum of its best-matching cluster (Hungarian matching).

Run: ``python benchmarks/quality.py [--scenes demo30,blur30] [--small]``; writes
benchmarks/results/quality.json and prints a Markdown table.

``--generalisation`` runs a second set of scenes, each built twice: with ``sigma.datasets`` and
with the independent simulator ``tests/altmodel.py`` (other line tables, continuum, absorption,
detector and layout), 256 x 256 pixels, no binning:

- ``eight@N``: 8 silicate/oxide phases at N = 3, 6, 10, 30, 200 counts/px (the sweep);
- ``rare@N``: 4 common phases and zircon (0.36 % of the area in 4-5 small grains, the map's only
  Zr) at 30 and 60 counts/px; ``rare_f1`` is the zircon F1 of the best cluster;
- ``pair@30``: two olivines differing only in Mg/Fe (Fo90, Fo70) in epoxy;
- ``blur@30``: the 8 phases with blurred boundaries (1.5 px): no phase may be added.

Methods: ``sigma`` (defaults, automatic k), ``pca_kmeans`` (TRUE k), and two oracles that know
the true pure spectra and count rates: ``oracle_raw`` (per-pixel Poisson maximum likelihood)
and ``oracle_pool3`` (the same on 3x3-pooled counts). Writes
``results/quality_generalisation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _paths import results_dir
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

RESULTS = results_dir()

SCENES: dict[str, dict[str, Any]] = {
    "demo30": {"counts_per_pixel": 30.0},
    "demo10": {"counts_per_pixel": 10.0},
    "demo200": {"counts_per_pixel": 200.0},
    "blur30": {"counts_per_pixel": 30.0, "blur": 1.5},
}
BIN = 2


def upsample(label: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Binned labels back to full resolution (each label repeated factor x factor), cropped to shape."""
    up = np.repeat(np.repeat(label, factor, axis=0), factor, axis=1)
    return up[: shape[0], : shape[1]]


def score(
    label_full: np.ndarray, truth: Any, counts_binned: np.ndarray, label_binned: np.ndarray
) -> dict[str, float]:
    """ARI at full resolution (over the area the binned map covers) and matched spectral cosine."""
    ny, nx = label_full.shape
    true = truth["label"].values[:ny, :nx]
    ari = adjusted_rand_score(true.ravel(), label_full.ravel())
    # cluster mean spectra from raw binned counts
    flat = counts_binned.reshape(-1, counts_binned.shape[-1]).astype(np.float64)
    lab = label_binned.ravel()
    ks = [k for k in np.unique(lab) if k >= 0]
    spectra = np.stack([flat[lab == k].mean(axis=0) for k in ks])
    ref = truth["phase_spectrum"].values
    a = spectra / np.linalg.norm(spectra, axis=1, keepdims=True)
    b = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = b @ a.T  # (phase, cluster)
    rows, cols = linear_sum_assignment(-cos)
    per_phase = np.zeros(ref.shape[0])
    per_phase[rows] = cos[rows, cols]  # unmatched phases (fewer clusters than phases) score 0
    return {
        "ari": float(ari),
        "phases_found": phases_found(true, label_full)[0],
        "cosine_mean": float(per_phase.mean()),
        "cosine_min": float(per_phase.min()),
        "k_found": len(ks),
    }


def phases_found(true: np.ndarray, label: np.ndarray) -> tuple[int, list[float]]:
    """Per-phase recall: a phase is found when a cluster with it as majority has F1 >= 0.5.

    Returns the number found and each true phase's best F1 (0 when no cluster has it as its
    majority phase).
    """
    t = np.asarray(true).ravel()
    lab = np.asarray(label).ravel()
    n_true = int(t.max()) + 1
    ks = np.unique(lab)
    # contingency table (cluster, phase)
    ci = np.searchsorted(ks, lab)
    table = np.zeros((ks.size, n_true), dtype=np.int64)
    np.add.at(table, (ci, t), 1)
    major = table.argmax(axis=1)
    size_c = table.sum(axis=1)
    size_p = table.sum(axis=0)
    best = np.zeros(n_true)
    for c in range(ks.size):
        p = major[c]
        f1 = 2.0 * table[c, p] / max(size_c[c] + size_p[p], 1)
        best[p] = max(best[p], f1)
    return int((best >= 0.5).sum()), [round(float(b), 3) for b in best]


def run_sigma(ds: Any, seed: int) -> tuple[np.ndarray, dict[str, Any], Any]:
    from sigma.pipeline import run

    res = run(ds, config={"bin_factor": BIN, "seed": seed}, show_progress=False)
    out = res.dataset
    return out["label"].values, json.loads(out.attrs["timings"]), out


def latent_only(out: Any, seed: int) -> tuple[np.ndarray, float]:
    """sigma's clustering of the 2-D latent alone (``refine="none"``), from the same training.

    The pipeline's default refines the latent phases in PCA space (``refine="pca"``); this row
    shows what that refinement adds. Returns the binned label map and the seconds it took.
    """
    from sigma.clustering import cluster

    t0 = time.perf_counter()
    lab = cluster(out["embedding"], random_state=seed)["label"].values
    return lab, time.perf_counter() - t0


def baselines(ds_binned: Any, feats_plain: Any, k: int, seed: int) -> dict[str, np.ndarray]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF
    from sklearn.mixture import GaussianMixture

    from sigma.preprocessing import pca_features

    ny, nx = ds_binned.sizes["y"], ds_binned.sizes["x"]
    out: dict[str, np.ndarray] = {}
    pcs = pca_features(ds_binned, n_components=8).features.values.reshape(ny * nx, -1)
    out["pca_kmeans"] = KMeans(k, n_init=4, random_state=seed).fit_predict(pcs).reshape(ny, nx)
    X = feats_plain.features.values.reshape(ny * nx, -1).astype(np.float64)
    W = NMF(k, init="nndsvda", max_iter=500, random_state=seed).fit_transform(np.clip(X, 0, None))
    out["nmf_argmax"] = W.argmax(axis=1).reshape(ny, nx)
    Xz = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    out["gmm_features"] = (
        GaussianMixture(k, n_init=2, random_state=seed).fit(Xz).predict(Xz).reshape(ny, nx)
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", default=",".join(SCENES))
    p.add_argument("--small", action="store_true", help="140 x 256 px scenes (quick check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: results/quality.json)"
    )
    p.add_argument(
        "--generalisation",
        action="store_true",
        help="counts sweep, rare phase, similar pair and blur on sigma.datasets and tests/altmodel",
    )
    p.add_argument(
        "--gen-scenes",
        default=",".join(GEN_SCENES),
        help="subset of the generalisation scenes (with --generalisation)",
    )
    p.add_argument("--models", default="datasets,altmodel", help="simulators for --generalisation")
    p.add_argument(
        "--pairs",
        default="",
        help="explicit model/scene list for --generalisation, e.g. altmodel/rare@30,datasets/eight@6",
    )
    args = p.parse_args()
    if args.generalisation:
        generalisation(args)
        return

    from sigma.datasets import synthetic_sem
    from sigma.preprocessing import Preprocessor

    shape = (140, 256) if args.small else (280, 512)
    report: dict[str, Any] = {"shape": shape, "bin": BIN, "scenes": {}}
    for name in args.scenes.split(","):
        ds, truth = synthetic_sem(shape, seed=args.seed, show_progress=False, **SCENES[name])
        k_true = int(truth.sizes["phase"])
        t0 = time.perf_counter()
        label_b, timings, out = run_sigma(ds, args.seed)
        t_sigma = time.perf_counter() - t0
        binned = Preprocessor(
            steps=[{"name": "bin_spatial", "factor": BIN}, {"name": "line_features"}]
        )
        plain = binned(ds)
        from sigma.preprocessing import bin_spatial

        ds_b = bin_spatial(ds, factor=BIN)
        counts_b = ds_b["counts"].values
        rows: dict[str, Any] = {}
        full = upsample(label_b, BIN, shape)
        rows["sigma"] = {
            **score(full, truth, counts_b, label_b),
            "seconds": round(t_sigma, 2),
            "timings": timings,
        }
        lab, secs = latent_only(out, args.seed)
        rows["sigma_latent_only"] = {
            **score(upsample(lab, BIN, shape), truth, counts_b, lab),
            "cluster_seconds": round(secs, 2),
        }
        for method, lab in baselines(ds_b, plain, k_true, args.seed).items():
            rows[method] = score(upsample(lab, BIN, shape), truth, counts_b, lab)
        report["scenes"][name] = {"k_true": k_true, **SCENES[name], "methods": rows}
        print(
            f"{name}: " + ", ".join(f"{m} ARI {r['ari']:.3f}" for m, r in rows.items()), flush=True
        )
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / ("quality_small.json" if args.small else "quality.json")
    report["seed"] = args.seed
    out.write_text(json.dumps(report, indent=2))
    print(
        "\n| scene | method | k found | phases found | ARI | mean cosine | min cosine |"
        "\n|---|---|---|---|---|---|---|"
    )
    for name, scene in report["scenes"].items():
        k_true = scene["k_true"]
        for method, r in scene["methods"].items():
            print(
                f"| {name} | {method} | {r['k_found']} | {r['phases_found']}/{k_true} | "
                f"{r['ari']:.3f} | {r['cosine_mean']:.3f} | {r['cosine_min']:.3f} |"
            )
    print(f"\nwritten to {out}")


# --------------------------------------------------------------------------------------------
# generalisation: counts sweep, rare phase, similar pair, blur; two independent simulators
# --------------------------------------------------------------------------------------------
GEN_SCENES: dict[str, dict[str, Any]] = {
    **{f"eight@{n}": {"kind": "eight", "counts": float(n)} for n in (3, 6, 10, 30, 200)},
    "rare@30": {"kind": "rare", "counts": 30.0},
    "rare@60": {"kind": "rare", "counts": 60.0},
    "pair@30": {"kind": "pair", "counts": 30.0},
    "blur@30": {"kind": "eight", "counts": 30.0, "blur": 1.5},
}
GEN_SHAPE = (256, 256)


def _datasets_scene(
    kind: str, counts: float, seed: int, shape: tuple[int, int], blur: float = 0.0
) -> tuple[Any, Any]:
    """The generalisation scenes built with sigma.datasets (same phases as tests/altmodel)."""
    from sigma.datasets import Phase, synthetic_sem

    f = Phase.from_formula
    if kind == "eight":
        phases: Any = {
            "quartz": 0.22,
            "albite": 0.17,
            "orthoclase": 0.14,
            f("anorthite", "CaAl2Si2O8", 2.73): 0.12,
            f("enstatite", "MgSiO3", 3.2): 0.11,
            f("diopside", "CaMgSi2O6", 3.4): 0.09,
            "forsterite": 0.08,
            f("almandine", "Fe3Al2Si3O12", 4.3): 0.07,
        }
    elif kind == "rare":
        phases = {
            "quartz": 0.35,
            "albite": 0.27,
            "orthoclase": 0.2,
            f("enstatite", "MgSiO3", 3.2): 0.1764,
            f("zircon", "ZrSiO4", 4.65): 0.0036,
        }
    else:
        phases = {
            "epoxy": 0.5,
            f("Fo90", "Mg1.8Fe0.2SiO4", 3.3): 0.28,
            f("Fo70", "Mg1.4Fe0.6SiO4", 3.6): 0.22,
        }
    return synthetic_sem(
        shape, counts_per_pixel=counts, phases=phases, blur=blur, seed=seed, show_progress=False
    )


def _altmodel_scene(
    kind: str, counts: float, seed: int, shape: tuple[int, int], blur: float = 0.0
) -> tuple[Any, Any]:
    import sys

    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import altmodel

    return altmodel.make_scene(kind, counts, seed=seed, shape=shape, blur=blur)


def oracle_labels(ds: Any, truth: Any, pool: int) -> np.ndarray:
    """Per-pixel Poisson maximum likelihood knowing the true spectra and count rates.

    ``pool`` > 1 sums each pixel's counts over its ``pool x pool`` window first (and the rates
    with it). Channels are summed to a third of the detector FWHM, as sigma does.
    """
    from scipy import ndimage

    from sigma.clustering.spatial import cluster_channels

    e = ds["energy"].values
    fwhm = float(ds.attrs.get("energy_resolution_mnka_ev", 130.0))
    c, _ = cluster_channels(ds["counts"].values, e, fwhm)
    spec = truth["phase_spectrum"].values[None]  # (1, phase, energy)
    p, _ = cluster_channels(spec, e, fwhm)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    lab_true = truth["label"].values.ravel()
    tot = c.sum(axis=1).astype(np.float64)
    k = p.shape[0]
    rate = np.array([tot[lab_true == j].mean() if (lab_true == j).any() else 1.0 for j in range(k)])
    cf = c.astype(np.float64)
    if pool > 1:
        cf = ndimage.uniform_filter(cf.reshape(ny, nx, -1), (pool, pool, 1), mode="nearest")
        cf = cf.reshape(ny * nx, -1) * pool * pool
        rate = rate * pool * pool
    shapes = p / p.sum(axis=1, keepdims=True) * (1 - 1e-9) + 1e-9 / p.shape[1]
    # rate: mean counts of the phase's pixels in these channels; shapes over the same channels
    ll = cf @ np.log(shapes.T * rate[None, :]) - rate[None, :]
    return np.asarray(ll.argmax(axis=1).reshape(ny, nx))


def generalisation(args: Any) -> None:
    """The generalisation benchmark (module docstring); prints a Markdown table."""
    from sklearn.cluster import KMeans

    from sigma.pipeline import run
    from sigma.preprocessing import pca_features

    shape = (128, 128) if args.small else GEN_SHAPE
    makers = {"datasets": _datasets_scene, "altmodel": _altmodel_scene}
    report: dict[str, Any] = {"shape": shape, "seed": args.seed, "scenes": {}}
    out_path = args.out or RESULTS / (
        "quality_generalisation_small.json" if args.small else "quality_generalisation.json"
    )
    todo = [(m, n) for m in args.models.split(",") for n in args.gen_scenes.split(",")]
    if args.pairs:
        todo = [tuple(t.split("/")) for t in args.pairs.split(",")]  # type: ignore[misc]
    for model, name in todo:
        sc = GEN_SCENES[name]
        ds, truth = makers[model](
            sc["kind"], sc["counts"], args.seed, shape, float(sc.get("blur", 0.0))
        )
        true = truth["label"].values
        k_true = int(truth.sizes["phase"])
        rows: dict[str, Any] = {}
        t0 = time.perf_counter()
        res = run(ds, config={"seed": args.seed}, show_progress=False)
        secs = time.perf_counter() - t0
        out = res.dataset
        info = json.loads(out.attrs.get("clustering") or "{}")
        labs = {"sigma": out["label"].values}
        ny, nx = true.shape
        pcs = pca_features(ds, n_components=8, show_progress=False).features.values
        labs["pca_kmeans"] = (
            KMeans(k_true, n_init=4, random_state=args.seed)
            .fit_predict(pcs.reshape(ny * nx, -1))
            .reshape(ny, nx)
        )
        labs["oracle_raw"] = oracle_labels(ds, truth, 1)
        labs["oracle_pool3"] = oracle_labels(ds, truth, 3)
        for method, lab in labs.items():
            n_found, f1 = phases_found(true, lab)
            rows[method] = {
                "ari": round(float(adjusted_rand_score(true.ravel(), lab.ravel())), 4),
                "k_found": int(np.unique(lab[lab >= 0]).size),
                "phases_found": n_found,
                "f1": f1,
            }
        rows["sigma"]["seconds"] = round(secs, 1)
        rows["sigma"]["timings"] = json.loads(out.attrs["timings"])
        rows["sigma"]["added_phases"] = info.get("added_phases", [])
        rows["sigma"]["beta"] = info.get("spatial", {}).get("beta")
        names = [str(v) for v in truth["phase"].values]
        entry = {"model": model, "scene": name, "k_true": k_true, "phases": names}
        if "zircon" in names:
            z = names.index("zircon")
            for r in rows.values():
                r["rare_f1"] = r["f1"][z]
        report["scenes"][f"{model}/{name}"] = {**entry, "methods": rows}
        print(
            f"{model}/{name}: "
            + ", ".join(
                f"{m} ARI {r['ari']:.3f} k {r['k_found']} found {r['phases_found']}/{k_true}"
                for m, r in rows.items()
            )
            + f" ({secs:.0f} s)",
            flush=True,
        )
        out_path.write_text(json.dumps(report, indent=2))  # after every scene
    print(
        "\n| model | scene | method | k found / true | phases found | ARI | rare F1 | sigma s |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for key, sc in report["scenes"].items():
        model, name = key.split("/")
        for method, r in sc["methods"].items():
            rare = f"{r['rare_f1']:.2f}" if "rare_f1" in r else ""
            secs_s = f"{r['seconds']:.0f}" if "seconds" in r else ""
            print(
                f"| {model} | {name} | {method} | {r['k_found']}/{sc['k_true']} | "
                f"{r['phases_found']}/{sc['k_true']} | {r['ari']:.3f} | {rare} | {secs_s} |"
            )
    print(f"\nwritten to {out_path}")


if __name__ == "__main__":
    main()
