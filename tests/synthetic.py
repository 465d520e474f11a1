"""Small synthetic inputs and a quick run configuration shared by tests (imported as ``synthetic``)."""

from __future__ import annotations

import numpy as np
import xarray as xr

# a quick sigma.run configuration for small scenes: 3 epochs, the number of phases found (auto-k)
FAST = {"max_epochs": 3, "batch_size": 256, "clustering": {"n_components": "auto", "k_max": 6}}


def make_features(
    ny: int = 12,
    nx: int = 10,
    n_features: int = 5,
    seed: int = 0,
    pixel_um: float = 0.5,
) -> xr.Dataset:
    """Three Gaussian blobs in feature space laid out as bands in (y, x), softmax-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, n_features))
    label = (np.arange(ny)[:, None] * 3 // ny) + np.zeros((1, nx), dtype=int)
    z = centres[label] + 0.1 * rng.normal(size=(ny, nx, n_features))
    f = np.exp(z)
    f /= f.sum(-1, keepdims=True)
    return xr.Dataset(
        {"features": (("y", "x", "feature"), f.astype(np.float32))},
        coords={
            "y": ("y", np.arange(ny) * pixel_um, {"units": "um"}),
            "x": ("x", np.arange(nx) * pixel_um, {"units": "um"}),
            "feature": [f"L{i}_Ka" for i in range(n_features)],
        },
        attrs={"source": "synthetic"},
    )
