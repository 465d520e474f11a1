"""TIFF files that carry their pixel size: the resolution tags (pixels per centimetre).

:func:`write_tiff` writes an array with the pixel size in the TIFF resolution tags
(``XResolution``/``YResolution`` in pixels per centimetre, ``ResolutionUnit`` centimetre: the
baseline unit ImageJ/Fiji and other readers understand) and a JSON image description (``pixel_size_um`` plus what the caller
adds, e.g. the units of the values). Files are written to a temporary sibling and renamed into
place, so no half-written file is left behind.

Examples
--------
>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset(coords={"y": ("y", [0.0, 0.5], {"units": "um"}),
...                         "x": ("x", [0.0, 0.5, 1.0], {"units": "um"})})
>>> pixel_size_um(ds)
(0.5, 0.5)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

__all__ = ["pixel_size_um", "write_tiff"]

_TO_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "m": 1e6,
    "pm": 1e-6,
    "A": 1e-4,
    "Å": 1e-4,
}


def pixel_size_um(ds: xr.Dataset) -> tuple[float, float] | None:
    """``(dy, dx)`` of one pixel in micrometres, None when the coordinates have no length unit."""
    units = str(ds["x"].attrs.get("units", "")).strip()
    factor = _TO_UM.get(units)
    if factor is None or ds.sizes["x"] < 2 or ds.sizes["y"] < 2:
        return None
    dx = abs(float(ds["x"].values[1] - ds["x"].values[0])) * factor
    dy = abs(float(ds["y"].values[1] - ds["y"].values[0])) * factor
    return (dy, dx) if dx > 0 and dy > 0 else None


def write_tiff(image: npt.ArrayLike, path: str | os.PathLike[str], ds: xr.Dataset, *,
               description: dict[str, object] | None = None) -> Path:  # fmt: skip
    """Write ``image`` (``(y, x)``, ``(y, x, 3|4)`` or ``(n, y, x)``) as TIFF with its pixel size.

    The resolution tags hold pixels per centimetre (``ResolutionUnit`` centimetre); the image
    description is JSON with ``pixel_size_um`` and ``description``'s items.
    """
    import tifffile

    path = Path(path)
    arr = np.asarray(image)
    size = pixel_size_um(ds)
    meta: dict[str, object] = {"source": str(ds.attrs.get("source", "")), **(description or {})}
    kwargs: dict[str, Any] = {}
    if size is not None:
        dy, dx = size
        kwargs = {  # pixels per centimetre: the baseline TIFF unit every reader knows
            "resolution": (1e4 / dx, 1e4 / dy),
            "resolutionunit": tifffile.RESUNIT.CENTIMETER,
        }
        meta["pixel_size_um"] = [dy, dx]
    photometric = (
        "rgb"
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8
        else "minisblack"
    )
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tifffile.imwrite(
        tmp, arr, photometric=photometric, description=json.dumps(meta), metadata=None, **kwargs
    )
    tmp.replace(path)
    return path
