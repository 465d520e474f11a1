"""Exports with their context: pictures with legend and scale bar, TIFFs with their pixel size.

Phase-map pictures, element (net line intensity) maps and NMF abundance maps.

- :func:`phase_map_png` draws the phase map with matplotlib, upscaled so a 30 x 30 pixel map is
  still a readable picture (nearest-neighbour: no pixel is blurred), a legend of the phases with
  their pixel counts and a scale bar in the scan's units;
- :func:`write_tiff` (:mod:`sigma.io.tiff`) writes an array with the pixel size in the TIFF
  resolution tags (pixels per centimetre, the baseline unit) and in micrometres in a JSON
  description;
- :func:`export_maps` writes the element maps and NMF abundance maps, one TIFF each.

Every file is written to a temporary name and renamed, so no half-written file is left behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xarray as xr

from gui import data as gd
from sigma.io.tiff import pixel_size_um, write_tiff

__all__ = ["pixel_size_um", "scale_bar_length", "phase_map_png", "write_tiff", "export_maps"]


def scale_bar_length(width: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) of about a fifth of ``width``.

    Examples
    --------
    >>> scale_bar_length(12.8), scale_bar_length(3.0), scale_bar_length(520.0)
    (2.0, 0.5, 100.0)
    """
    target = width / 5
    power = 10 ** np.floor(np.log10(target))
    for step in (5, 2, 1):
        if step * power <= target:
            return float(step * power)
    return float(power)


def phase_map_png(
    ds: xr.Dataset, *, opacity: float = 0.6, min_side_px: int = 800, dpi: int = 150
) -> bytes:
    """The phase map as PNG bytes: upscaled, with a legend (name, pixels) and a scale bar.

    Parameters
    ----------
    ds
        Results.
    opacity
        Phase colours over the navigation image (see :func:`gui.data.phase_rgba`).
    min_side_px
        The map's longer side is drawn at least this many screen pixels (whole multiples of the
        scan's pixels, nearest neighbour).
    dpi
        Resolution of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    rgba = gd.phase_rgba(ds, opacity=opacity)
    label = ds["label"].values
    rgba[label < 0, :3] = 158  # no data: grey
    ny, nx = label.shape
    scale = max(1, int(np.ceil(min_side_px / max(ny, nx))))
    img = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)
    names, colors = gd._names_colors(ds)
    lab = label.ravel()
    counts = np.bincount(lab[lab >= 0], minlength=len(names))[: len(names)]
    handles = [Patch(color=c, label=f"{i}: {n} ({int(p):,} px)") for i, (n, c, p) in
               enumerate(zip(names, colors, counts, strict=True))]  # fmt: skip
    if (label < 0).any():
        handles.append(Patch(color="#9e9e9e", label=f"no data ({int((label < 0).sum()):,} px)"))
    w_in, h_in = img.shape[1] / dpi, img.shape[0] / dpi
    fig = plt.figure(figsize=(w_in + 3.2, max(h_in, 0.25 * len(handles) + 0.5)), dpi=dpi)
    ax = fig.add_axes((0, 0, w_in / (w_in + 3.2), min(1.0, h_in / fig.get_figheight())))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    size = pixel_size_um(ds)
    if size is not None:
        width_um = nx * size[1]
        bar = scale_bar_length(width_um)
        bar_px = bar / size[1] * scale
        x0, y0 = img.shape[1] * 0.04, img.shape[0] * 0.94
        ax.add_patch(Rectangle((x0 - 6, y0 - img.shape[0] * 0.06), bar_px + 12, img.shape[0] * 0.085,
                               color="white", alpha=0.75, lw=0))  # fmt: skip
        ax.plot([x0, x0 + bar_px], [y0, y0], color="black", lw=4, solid_capstyle="butt")
        text = f"{bar:g} µm" if bar >= 1 else f"{bar * 1000:g} nm"
        ax.text(
            x0 + bar_px / 2, y0 - img.shape[0] * 0.015, text, ha="center", va="bottom", fontsize=9
        )
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(w_in / (w_in + 3.2) + 0.01, 0.98),
               fontsize=8, frameon=False, title="phases", title_fontsize=9)  # fmt: skip
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _atomic_bytes(data: bytes, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def write_png(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write PNG bytes atomically."""
    return _atomic_bytes(data, Path(path))


def export_maps(ds: xr.Dataset, folder: str | os.PathLike[str], stem: str, *,
                overwrite: bool = False) -> list[Path]:  # fmt: skip
    """Write every element map (net line intensity, counts) and NMF abundance map as a TIFF.

    Files ``<stem>_element_<line>.tif`` (float32, counts per pixel; z-scores when the results
    keep no counts, said in the description) and ``<stem>_nmf_abundance_<j>.tif``.

    Raises
    ------
    FileExistsError
        If a file exists and ``overwrite`` is False (nothing is written then).
    ValueError
        If the results hold neither features nor NMF abundances.
    """
    folder = Path(folder)
    maps, units = gd.feature_maps(ds)
    planned: list[tuple[Path, npt.NDArray[np.float32], dict[str, object]]] = []
    if maps is not None:
        for name in [str(v) for v in maps["feature"].values]:
            arr = np.asarray(maps.sel(feature=name).values, np.float32)
            planned.append(
                (
                    folder / f"{stem}_element_{name}.tif",
                    arr,
                    {"map": f"{name} line", "units": units},
                )
            )
    if "nmf_abundance" in ds:
        ab = ds["nmf_abundance"].transpose("component", "y", "x").values
        for j in range(ab.shape[0]):
            planned.append((folder / f"{stem}_nmf_abundance_{j}.tif", np.asarray(ab[j], np.float32),
                            {"map": f"NMF component {j} abundance", "units": "1"}))  # fmt: skip
    if not planned:
        raise ValueError(
            "these results hold no element maps (features) and no NMF abundances to export."
        )
    existing: Sequence[str] = [str(p) for p, _, _ in planned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]!r} already exists. Tick 'overwrite' to replace the maps."
        )
    return [write_tiff(arr, path, ds, description=desc) for path, arr, desc in planned]
