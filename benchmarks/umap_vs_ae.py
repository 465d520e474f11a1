"""UMAP vs the autoencoder as sigma's 2-D embedding, on the demo scenes (issue 16).

For each scene (``sem``: the 8-phase demo scene, 2x2 binned; ``tem``: the 5-phase TEM scene)
it runs ``sigma.run`` twice, ``embedding="autoencoder"`` and ``embedding="umap"``, with the same
features, clustering (automatic k) and refinement, and reports the adjusted Rand index of the
phase map against the truth, the number of phases found and the time of the embedding stages
(train + encode) and of the whole run.

Run: ``python benchmarks/umap_vs_ae.py``; writes benchmarks/results/umap_vs_ae.json.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from _paths import results_dir
from sklearn.metrics import adjusted_rand_score

RESULTS = results_dir()


def _scene(name: str) -> tuple[Any, Any, dict[str, Any]]:
    import sigma

    if name == "sem":
        ds, truth = sigma.datasets.demo_scene()
        return ds, truth, {"bin_factor": 2}
    ds, truth = sigma.datasets.synthetic_tem(seed=0, show_progress=False)
    return ds, truth, {}


def main() -> None:
    import sigma

    out = []
    for scene in ("sem", "tem"):
        ds, truth, cfg = _scene(scene)
        f = cfg.get("bin_factor", 1)
        for emb in ("autoencoder", "umap"):
            t0 = time.perf_counter()
            res = sigma.run(
                ds, config={**cfg, "embedding": emb, "library": "none"}, show_progress=False
            )
            total = time.perf_counter() - t0
            lab = res.label.values
            full = np.repeat(np.repeat(lab, f, axis=0), f, axis=1)
            tl = truth["label"].values[: full.shape[0], : full.shape[1]]
            ari = adjusted_rand_score(tl.ravel(), full.ravel())
            timings = json.loads(res.dataset.attrs["timings"])
            row = {
                "scene": scene,
                "embedding": emb,
                "ari": round(float(ari), 3),
                "k_found": res.n_clusters,
                "k_true": int(truth.sizes["phase"]),
                "embed_seconds": round(timings.get("train", 0) + timings.get("encode", 0), 1),
                "total_seconds": round(total, 1),
                "timings": timings,
            }
            print(row)
            out.append(row)
    (RESULTS / "umap_vs_ae.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
