"""``sigma info FILE``: print what a spectrum-image file holds, as a readable table.

Shows the navigation shape and pixel size, the number of channels, the energy range with its
scale and offset in keV, the beam energy, the elements and X-ray lines of the file's metadata,
the counts per pixel (mean, median, min, max; computed chunk by chunk for ``--lazy``) and the
navigation images. Works on every format :func:`sigma.io.load` reads, and on sigma NetCDF/Zarr
files (for feature or results files it lists dims and variables).

Examples
--------
.. code-block:: console

    $ sigma info map.bcf
    $ sigma info big.emd --lazy
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sigma._schema import COUNTS, DIM_ENERGY, DIM_X, DIM_Y, energy_scale
from sigma.exceptions import SigmaError

__all__ = ["main", "build_parser", "summarize", "format_summary"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sigma info``."""
    parser = argparse.ArgumentParser(
        prog="sigma info",
        description="Print what a spectrum-image file holds: shape, energy axis, beam energy, "
        "elements, counts per pixel and navigation images.",
    )
    parser.add_argument(
        "file",
        help="spectrum image (.bcf, .emd, .spd, .pts, .rpl, .msa, "
        ".hspy, .zspy) or sigma NetCDF/Zarr file",
    )
    parser.add_argument(
        "--lazy",
        action="store_true",
        help="read chunk by chunk with dask (for files larger than memory)",
    )
    parser.add_argument(
        "--format",
        default=None,
        help="reader to use instead of the one the extension implies (e.g. bcf)",
    )
    parser.add_argument(
        "--select-signal",
        default=None,
        help="index or title of the spectrum image when the file holds several",
    )
    return parser


def _fmt_num(value: float, digits: int = 6) -> str:
    if value is None or not np.isfinite(value):
        return "unknown"
    return f"{value:.{digits}g}"


def summarize(ds: xr.Dataset) -> dict[str, Any]:
    """Return the numbers ``sigma info`` prints for a spectrum image (chunkwise for dask data).

    Parameters
    ----------
    ds
        A spectrum image (``counts`` with dims ``(y, x, energy)``) or any sigma dataset.

    Returns
    -------
    dict
        Keys ``navigation_shape``, ``pixel_size``, ``pixel_units``, ``n_channels``,
        ``energy_min_kev``, ``energy_max_kev``, ``energy_scale_kev``, ``energy_offset_kev``,
        ``beam_energy_kev``, ``elements``, ``xray_lines``, ``dtype``, ``lazy``,
        ``counts_total``, ``counts_mean``, ``counts_median``, ``counts_min``, ``counts_max``
        (counts per pixel), ``nav_images`` (name -> shape); only ``dims`` and ``variables`` for
        datasets without ``counts``.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.ones((2, 3, 10), dtype=np.uint16), energy_scale_kev=0.01)
    >>> s = summarize(ds)
    >>> s["navigation_shape"], s["n_channels"], s["counts_mean"], s["counts_median"]
    ((2, 3), 10, 10.0, 10.0)
    """
    out: dict[str, Any] = {
        "dims": dict(ds.sizes),
        "variables": {name: tuple(var.dims) for name, var in ds.data_vars.items()},
        "attrs": dict(ds.attrs),
    }
    if COUNTS not in ds.data_vars or tuple(ds[COUNTS].dims) != (DIM_Y, DIM_X, DIM_ENERGY):
        is_results = "label" in ds.data_vars or "cluster" in ds.dims
        if (
            not is_results
            and "features" in ds.data_vars
            and tuple(ds["features"].dims)[:2] == (DIM_Y, DIM_X)
        ):
            values = np.asarray(ds["features"].values, dtype=np.float64)
            values = values.reshape(-1, values.shape[-1])
            out["element_maps"] = {
                str(name): (float(np.nanmean(col)), float(np.nanmin(col)), float(np.nanmax(col)))
                for name, col in zip(ds["feature"].values, values.T, strict=True)
            }
        return out
    counts = ds[COUNTS]
    ny, nx, ne = counts.shape
    scale, offset = energy_scale(ds) if ne > 1 else (float("nan"), float(ds[DIM_ENERGY][0]))

    def step(dim: str) -> float:
        values = np.asarray(ds[dim].values, dtype=np.float64)
        return float(values[1] - values[0]) if values.size > 1 else float("nan")

    # per-pixel totals: one (y, x) map, reduced chunk by chunk when counts are dask-backed
    acc = np.int64 if np.issubdtype(counts.dtype, np.integer) else np.float64
    per_pixel = counts.sum(DIM_ENERGY, dtype=acc)
    totals = np.asarray(per_pixel.values, dtype=np.float64)
    out.update(
        navigation_shape=(ny, nx),
        pixel_size=(step(DIM_Y), step(DIM_X)),
        pixel_units=str(ds[DIM_Y].attrs.get("units", "px")),
        n_channels=ne,
        energy_min_kev=float(ds[DIM_ENERGY].values[0]),
        energy_max_kev=float(ds[DIM_ENERGY].values[-1]),
        energy_scale_kev=scale,
        energy_offset_kev=offset,
        beam_energy_kev=float(ds.attrs.get("beam_energy_kev", float("nan"))),
        elements=list(ds.attrs.get("elements", [])),
        xray_lines=list(ds.attrs.get("xray_lines", [])),
        dtype=str(counts.dtype),
        lazy=counts.chunks is not None,
        chunks=None if counts.chunks is None else tuple(c[0] for c in counts.chunks),
        counts_total=float(totals.sum()),
        counts_mean=float(totals.mean()),
        counts_median=float(np.median(totals)),
        counts_min=float(totals.min()),
        counts_max=float(totals.max()),
        nav_images={
            name: tuple(int(n) for n in var.shape)
            for name, var in ds.data_vars.items()
            if name != COUNTS and tuple(var.dims) == (DIM_Y, DIM_X)
        },
    )
    out.update(_run_preview(ds))
    return out


def _run_preview(ds: xr.Dataset) -> dict[str, Any]:
    """What ``sigma run`` would use: the features (element, line, why) and the no-data pixels."""
    from sigma.preprocessing import _mnka
    from sigma.preprocessing.lines import select_lines
    from sigma.preprocessing.nodata import no_data_mask

    out: dict[str, Any] = {}
    try:
        mask = no_data_mask(ds)
        out["no_data_pixels"] = int(mask.sum())
    except SigmaError as err:
        out["no_data_pixels"] = int(ds.sizes[DIM_Y] * ds.sizes[DIM_X])
        out["no_data_note"] = str(err)
    try:
        out["features"] = [
            {"feature": c.feature, "line": c.line, "energy_kev": c.energy_kev, "reason": c.reason}
            for c in select_lines(ds, None, mnka_resolution_ev=_mnka(ds, None))
        ]
    except (SigmaError, ValueError) as err:
        out["features"] = []
        out["features_note"] = str(err)
    return out


def format_summary(summary: dict[str, Any], *, path: str = "", reader: str = "") -> str:
    """Return :func:`summarize`'s output as an aligned two-column table (one line per item)."""
    rows: list[tuple[str, str]] = []
    if path:
        rows.append(("file", path))
    if reader:
        rows.append(("format", reader))
    if "n_channels" not in summary:
        rows.append(("dims", ", ".join(f"{k}={v}" for k, v in summary["dims"].items())))
        for name, dims in summary["variables"].items():
            rows.append((f"variable {name}", f"({', '.join(dims)})"))
        maps = summary.get("element_maps")
        if maps:
            rows.append(("element maps", f"{len(maps)}: {', '.join(maps)}"))
            for name, (mean, lo, hi) in maps.items():
                rows.append(
                    (f"  {name}", f"mean {_fmt_num(mean)}, min {_fmt_num(lo)}, max {_fmt_num(hi)}")
                )
            rows.append(("note", "element maps, no spectra: `sigma run` clusters the maps"))
        else:
            rows.append(("note", "no 'counts' (y, x, energy) variable: not a spectrum image"))
    else:
        ny, nx = summary["navigation_shape"]
        dy, dx = summary["pixel_size"]
        units = summary["pixel_units"]
        nav = f"{ny} x {nx} pixels (y x)"
        if np.isfinite(dy) and np.isfinite(dx) and units != "px":
            nav += f", pixel size {_fmt_num(dy, 4)} x {_fmt_num(dx, 4)} {units}"
            nav += f", field of view {_fmt_num(dy * ny, 4)} x {_fmt_num(dx * nx, 4)} {units}"
        rows.append(("navigation", nav))
        rows.append(("channels", str(summary["n_channels"])))
        rows.append(
            (
                "energy",
                f"{summary['energy_min_kev']:.4f} to {summary['energy_max_kev']:.4f} keV "
                f"(scale {_fmt_num(summary['energy_scale_kev'])} keV/channel, "
                f"offset {_fmt_num(summary['energy_offset_kev'])} keV)",
            )
        )
        beam = summary["beam_energy_kev"]
        rows.append(("beam energy", f"{_fmt_num(beam, 4)} kV" if np.isfinite(beam) else "unknown"))
        rows.append(("elements", ", ".join(summary["elements"]) or "none in the metadata"))
        rows.append(("X-ray lines", ", ".join(summary["xray_lines"]) or "none in the metadata"))
        storage = summary["dtype"]
        if summary["lazy"]:
            storage += f", dask chunks {summary['chunks']}"
        rows.append(("counts", storage))
        rows.append(
            (
                "counts/pixel",
                f"mean {summary['counts_mean']:.1f}, median {summary['counts_median']:.1f}, "
                f"min {summary['counts_min']:.0f}, max {summary['counts_max']:.0f} "
                f"(total {summary['counts_total']:.0f})",
            )
        )
        if "features" in summary:
            ny, nx = summary["navigation_shape"]
            n_bad = summary.get("no_data_pixels", 0)
            rows.append(
                (
                    "no-data pixels",
                    f"{n_bad} ({100.0 * n_bad / max(ny * nx, 1):.1f} %), left out of a run"
                    if n_bad
                    else "none",
                )
            )
            feats = summary["features"]
            if feats:
                for i, f in enumerate(feats):
                    rows.append(
                        (
                            "run features" if i == 0 else "",
                            f"{f['feature']:<3} {f['line']:<7} {f['energy_kev']:7.3f} keV  "
                            f"({f['reason']})",
                        )
                    )
            else:
                rows.append(("run features", summary.get("features_note", "none")))
        images = summary["nav_images"]
        rows.append(
            (
                "nav images",
                ", ".join(f"{k} ({v[0]} x {v[1]})" for k, v in images.items()) or "none",
            )
        )
    attrs = summary.get("attrs", {})
    if "energy_resolution_mnka_ev" in attrs:
        rows.append(
            ("resolution", f"{_fmt_num(attrs['energy_resolution_mnka_ev'], 4)} eV at Mn Ka")
        )
    for key, label in (
        ("instrument", "instrument"),
        ("acquisition_date", "acquired"),
        ("live_time_s", "live time (s)"),
        ("real_time_s", "real time (s)"),
    ):
        if key in attrs:
            value = attrs[key]
            rows.append((label, _fmt_num(value) if isinstance(value, float) else str(value)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sigma info``; return the exit status (0 ok, 1 the file could not be read)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from sigma.io import _FORMATS, READERS, load

    select: int | str | None = args.select_signal
    if isinstance(select, str) and select.lstrip("-").isdigit():
        select = int(select)
    path = Path(args.file)
    try:
        ds = load(path, format=args.format, lazy=args.lazy, select_signal=select)
        summary = summarize(ds)
    except (SigmaError, OSError, TypeError, ValueError) as err:
        sys.stderr.write(f"sigma info: error: {err}\n")
        return 1
    reader = _FORMATS.get((args.format or "").lower().lstrip(".")) or READERS.get(
        path.suffix.lower()
    )
    label = f"{reader.name} ({reader.description})" if reader else ""
    sys.stdout.write(format_summary(summary, path=os.fspath(path), reader=label))
    return 0
