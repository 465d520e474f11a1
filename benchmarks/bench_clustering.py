"""Clustering benchmark: auto-k on 143,360 latent points (448 x 320 map) with known k = 3, 5, 8.

Run: .venv/bin/python benchmarks/bench_clustering.py [k ...]
Prints, per k: phases found, Gaussians chosen, ARI, the BIC-minimum k (SIGMA's rule), wall time
of the auto sweep (fit on a 20,000-point subsample + predict on all) and of one fixed-k fit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_clustering import make_latent  # noqa: E402

from sigma.clustering import cluster  # noqa: E402

N = 448 * 320  # 143,360 pixels


def main(ks: list[int]) -> None:
    for k in ks:
        X, y = make_latent(k, n=N + 100, seed=0)
        order = np.random.default_rng(1).permutation(X.shape[0])[
            :N
        ]  # a few points of each blob dropped
        X, y = X[order].reshape(448, 320, 2), y[order]
        t0 = time.perf_counter()
        ds = cluster(X, k_max=16, n_init=2, random_state=0)
        t_auto = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster(X, n_components=k, n_init=2, random_state=0)
        t_fixed = time.perf_counter() - t0
        bic = ds.model_selection_score
        k_bic = int(bic.n_components_tried.values[int(np.argmin(bic.values))])
        ari = adjusted_rand_score(y, ds.label.values.ravel())
        print(
            f"k={k}: found {ds.sizes['cluster']} phases (BIC-min k={k_bic}), ARI={ari:.3f}, "
            f"auto {t_auto:.1f} s, fixed-k fit {t_fixed:.1f} s, "
            f"n={N}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 5, 8])
