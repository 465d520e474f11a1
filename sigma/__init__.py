"""sigma: unsupervised phase finding in hyperspectral electron-microscopy data.

The notebook API in short::

    import sigma
    ds = sigma.load("map.bcf")                 # xr.Dataset: counts (y, x, energy), energy in keV
    ds, truth = sigma.datasets.synthetic_sem() # demo scene with ground truth
    sigma.save(ds, "map.nc")                   # NetCDF or Zarr, round-trips exactly

Heavy parts (torch, Lightning) are imported only when used, so ``import sigma`` stays light and
the GUI never pulls in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# name -> module that defines it; imported on first access (PEP 562)
_LAZY = {
    "load": "sigma.io",
    "save": "sigma.io",
    "open_dataset": "sigma.io",
    "datasets": "sigma.datasets",
    "preprocessing": "sigma.preprocessing",
    "xray": "sigma.xray",
    "io": "sigma.io",
    "run": "sigma.pipeline",
    "PipelineConfig": "sigma.config",
    "SigmaResults": "sigma.results",
    "pipeline": "sigma.pipeline",
    "cluster": "sigma.clustering",
    "clustering": "sigma.clustering",
    "analysis": "sigma.analysis",
    "results": "sigma.results",
    "phases": "sigma.phases",
    "quantify": "sigma.quantify",
    "embedding": "sigma.embedding",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if module.__name__ == f"sigma.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sigma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
