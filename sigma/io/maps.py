"""Element-map input (SIGMA's IMAGEDataset): a folder of per-element images as features.

Many users have only the element maps their vendor software exported: one image per element or
X-ray line (``Fe Ka.tif``, ``Fe_Ka.png``, ``Fe.tif``) and perhaps a BSE or SE image
(``BSE.tif``, ``SE.png``). :func:`load_maps` reads such a folder into sigma's data model with
*features* instead of counts: ``features`` ``(y, x, feature)`` float32, one feature per element
map (named ``Fe_Ka`` or ``Fe``), and the BSE/SE image as ``bse``/``se`` ``(y, x)``. There are
no spectra, so ``sigma run maps/`` goes features -> autoencoder -> clusters -> results, and the
phase table shows each cluster's mean element-map intensities.

TIFF files are read with tifffile, PNG/JPEG/BMP with scikit-image; colour images are turned to
grey (luminance), and every map keeps its own intensity scale (the pipeline normalises each).
Files whose name is neither an element, an X-ray line nor BSE/SE (``overlay.png``) are skipped
with a log message.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma.exceptions import SchemaError

logger = logging.getLogger(__name__)

__all__ = ["load_maps", "is_map_folder", "write_element_maps", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_NAV = {"bse": "bse", "se": "se", "sei": "se", "bei": "bse", "haadf": "haadf"}
_NAME = re.compile(r"^([A-Z][a-z]?)(?:[ _-]?([KLM][a-z]?\d?))?$")


def is_map_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder (not ``.zarr``) that holds at least one image file."""
    p = Path(path)
    if not p.is_dir() or p.suffix.lower() == ".zarr":
        return False
    return any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir() if f.is_file())


def _feature_name(stem: str) -> tuple[str, str] | None:
    """``("feature", name)`` for ``Fe Ka``/``Fe_Ka``/``Fe``, ``("nav", "bse")`` for BSE; else None."""
    from sigma.xray import ELEMENTS, element_lines

    s = stem.strip()
    if s.lower() in _NAV:
        return "nav", _NAV[s.lower()]
    m = _NAME.match(s)
    if m is None or m.group(1) not in ELEMENTS:
        return None
    element, family = m.group(1), m.group(2)
    if family is None:
        return "feature", element
    name = f"{element}_{family}"
    if name not in element_lines(element):
        return None
    return "feature", name


def _read_image(path: Path) -> npt.NDArray[np.float32]:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = np.asarray(tifffile.imread(path))
    else:
        from skimage import io as skio

        img = np.asarray(skio.imread(path))
    img = np.squeeze(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):  # colour: luminance of RGB
        rgb = img[..., :3].astype(np.float64)
        img = rgb @ np.array([0.2126, 0.7152, 0.0722])
    if img.ndim != 2:
        raise SchemaError(
            f"{str(path)!r} is not a 2-D image (shape {img.shape!r}); export one grey-scale "
            "image per element."
        )
    out = img.astype(np.float32)
    if not np.isfinite(out).all():
        raise SchemaError(
            f"{str(path)!r} holds NaN or infinite values; export the map with finite intensities."
        )
    return out


def load_maps(
    path: str | os.PathLike[str], *, pixel_size: float | None = None, pixel_units: str = "px"
) -> xr.Dataset:
    """Read a folder of element maps (and an optional BSE/SE image) as features.

    Parameters
    ----------
    path : path
        The folder.
    pixel_size : float, optional
        Pixel size in ``pixel_units``; default: the size TIFFs written by
        :func:`write_element_maps` (``sigma`` exports) record, else 1 px.
    pixel_units : str
        Units of the pixel size (``"um"``, ``"nm"`` ...).

    Returns
    -------
    xr.Dataset
        ``features`` ``(y, x, feature)`` float32 (one feature per map, in the maps' own
        intensity units: ``units`` from a sigma export, else "arbitrary"), ``bse``/``se`` when present, attrs ``source``, ``history``,
        ``input_kind = "element_maps"``, ``elements`` and ``xray_lines``.

    Raises
    ------
    SchemaError
        No element maps in the folder, or images of different shapes (naming the odd one).

    Examples
    --------
    >>> import tempfile, numpy as np, tifffile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tifffile.imwrite(d / "Fe Ka.tif", np.ones((4, 5), np.float32))
    >>> tifffile.imwrite(d / "Si.tif", np.zeros((4, 5), np.float32))
    >>> ds = load_maps(d)
    >>> ds.features.dims, [str(f) for f in ds.feature.values]
    (('y', 'x', 'feature'), ['Fe_Ka', 'Si'])
    """
    from sigma._schema import append_history

    folder = Path(path)
    if not folder.is_dir():
        raise SchemaError(f"{str(folder)!r} is not a folder of element maps.")
    files = sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    )
    maps: dict[str, tuple[Path, npt.NDArray[np.float32]]] = {}
    nav: dict[str, tuple[Path, npt.NDArray[np.float32]]] = {}
    for f in files:
        kind = _feature_name(f.stem)
        if kind is None:
            logger.info("%s: not an element, X-ray line or BSE/SE image; skipped", f.name)
            continue
        target = maps if kind[0] == "feature" else nav
        if kind[1] in target:
            raise SchemaError(
                f"{f.name!r} and {target[kind[1]][0].name!r} both give {kind[1]!r}; keep one."
            )
        target[kind[1]] = (f, _read_image(f))
    if not maps:
        raise SchemaError(
            f"{str(folder)!r} holds no element maps: name them after the element or X-ray line "
            "('Fe Ka.tif', 'Fe.tif', 'Si_Ka.png')."
        )
    images = [*maps.values(), *nav.values()]
    shapes = [img.shape for _, img in images]
    counts = {shape: shapes.count(shape) for shape in dict.fromkeys(shapes)}
    common = max(counts, key=counts.__getitem__)
    if len(counts) > 1 and list(counts.values()).count(counts[common]) > 1:
        # no size holds a majority: name every file with its size
        groups = "; ".join(
            ", ".join(repr(f.name) for f, img in images if img.shape == shape)
            + f" {shape[0]} x {shape[1]} px"
            for shape in counts
        )
        raise SchemaError(f"the maps differ in size ({groups}); export all maps at one size.")
    for f, img in images:
        if img.shape != common:
            raise SchemaError(
                f"{f.name!r} is {img.shape[0]} x {img.shape[1]} px but the other maps are "
                f"{common[0]} x {common[1]} px; export all maps at one size."
            )
    names = list(maps)
    stack = np.stack([maps[n][1] for n in names], axis=-1)
    ny, nx = common
    step = float(pixel_size) if pixel_size is not None else 1.0
    units = pixel_units if pixel_size is not None else "px"
    metas = [_tiff_meta(maps[n][0]) for n in names]  # what write_element_maps wrote, if it did
    if pixel_size is None and metas[0].get("pixel_size_um"):
        step, units = float(metas[0]["pixel_size_um"][-1]), "um"
    given = {str(m.get("units", "")) for m in metas}  # one unit for all maps, or none
    value_units = given.pop() if len(given) == 1 and "" not in given else "arbitrary"
    coords: dict[str, Any] = {
        "y": ("y", np.arange(ny) * step, {"units": units, "long_name": "y"}),
        "x": ("x", np.arange(nx) * step, {"units": units, "long_name": "x"}),
        "feature": ("feature", np.array(names, dtype=str)),
    }
    ds = xr.Dataset(
        {
            "features": (
                ("y", "x", "feature"),
                stack,
                {"long_name": "element-map intensity", "units": value_units},
            )
        },
        coords=coords,
    )
    for key, (_, img) in nav.items():
        ds[key] = (("y", "x"), img, {"long_name": f"{key.upper()} image"})
    lines = [n for n in names if "_" in n]
    ds.attrs = {
        "source": os.fspath(folder),
        "input_kind": "element_maps",
        "elements": sorted({n.split("_")[0] for n in names}),
        "xray_lines": lines,
        "history": [],
    }
    ds.attrs = append_history(
        ds.attrs, f"load element maps {os.fspath(folder)!r}: {', '.join(names)}"
    )
    return ds


def _tiff_meta(path: Path) -> dict[str, Any]:
    """The JSON description :func:`sigma.io.tiff.write_tiff` writes; {} for other images."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return {}
    import json

    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = json.loads(tif.pages[0].description or "{}")  # type: ignore[union-attr]
    except (ValueError, TypeError, IndexError, AttributeError, tifffile.TiffFileError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_element_maps(ds: xr.Dataset, directory: str | os.PathLike[str]) -> list[Path]:
    """Write the element maps (one TIFF per feature, ``Fe Ka.tif``) and the navigation image.

    The maps are net line intensities in counts per pixel
    (:func:`sigma.line_intensity.element_maps`) when the results keep their counts, else the
    standardised features; the TIFF description says which (``units``), and the resolution
    tags hold the pixel size (:func:`sigma.io.tiff.write_tiff`). The inverse of
    :func:`load_maps` (used by :meth:`sigma.results.SigmaResults.export`).
    """
    from sigma.io.tiff import write_tiff
    from sigma.line_intensity import element_maps

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    maps, units = element_maps(ds)
    if maps is not None:
        for name in (str(v) for v in maps["feature"].values):
            arr = np.asarray(maps.sel(feature=name).values, dtype=np.float32)
            path = out / f"{name.replace('_', ' ')}.tif"
            written.append(write_tiff(arr, path, ds, description={"map": name, "units": units}))
    if "nav_image" in ds:
        kind = str(ds["nav_image"].attrs.get("kind", "bse")).upper()
        arr = np.asarray(ds["nav_image"].values, dtype=np.float32)
        written.append(write_tiff(arr, out / f"{kind}.tif", ds, description={"map": kind}))
    return written
