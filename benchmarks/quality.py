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
        "cosine_mean": float(per_phase.mean()),
        "cosine_min": float(per_phase.min()),
        "k_found": len(ks),
    }


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
    args = p.parse_args()

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
        "\n| scene | method | k found | ARI | mean cosine | min cosine |\n|---|---|---|---|---|---|"
    )
    for name, scene in report["scenes"].items():
        for method, r in scene["methods"].items():
            print(
                f"| {name} | {method} | {r['k_found']} | {r['ari']:.3f} | {r['cosine_mean']:.3f} | {r['cosine_min']:.3f} |"
            )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
