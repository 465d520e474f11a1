"""``sigma convert FILE OUT.zarr``: rewrite a spectrum image as chunked Zarr for fast later runs.

The file is read lazily (dask) and written chunk by chunk, so files larger than memory convert
without loading them whole. ``counts`` is chunked ``(Y, X, all channels)``: every chunk holds
whole spectra, which is what per-pixel preprocessing reads. Reader options (``--downsample``,
``--cutoff-at-kv``, ``--rebin-energy`` ...) are applied while reading.

How much of the input is in memory at once depends on its reader (RosettaSciIO): sigma
NetCDF/Zarr, HyperSpy, Ripple and EDAX files are read block by block; a Bruker ``.bcf`` hypermap
is one compressed stream that is decoded whole (use ``--downsample``/``--cutoff-at-kv`` to shrink
it while decoding), and Velox ``.emd`` event streams are decoded whole as well.

Examples
--------
.. code-block:: console

    $ sigma convert map.bcf map.zarr
    $ sigma convert big.emd big.zarr --chunks 256 256 --rebin-energy 2 --overwrite
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from sigma._schema import DIM_ENERGY, DIM_X, DIM_Y, append_history
from sigma.exceptions import SigmaError

__all__ = ["main", "build_parser", "rechunk_spatial"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNKS = (128, 128)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sigma convert``."""
    p = argparse.ArgumentParser(
        prog="sigma convert",
        description="Read a spectrum image lazily and write it as chunked Zarr (energy axis "
        "whole, pixels in Y x X blocks) or NetCDF, so that later runs read it fast.",
    )
    p.add_argument("file", help="input spectrum image (any format sigma info reads)")
    p.add_argument("out", help="output .zarr folder (or .nc file)")
    p.add_argument(
        "--chunks",
        nargs=2,
        type=int,
        metavar=("Y", "X"),
        default=list(DEFAULT_CHUNKS),
        help="spatial chunk size in pixels (default: %(default)s); the energy axis is not split",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--format", default=None, help="reader to use instead of the extension's")
    p.add_argument("--downsample", type=int, default=None, help="sum N x N pixel blocks")
    p.add_argument(
        "--cutoff-at-kv", type=float, default=None, help="drop channels above this energy (keV)"
    )
    p.add_argument("--rebin-energy", type=int, default=None, help="sum groups of N channels")
    p.add_argument(
        "--no-sum-frames",
        dest="sum_frames",
        action="store_false",
        help="Velox/JEOL: do not sum frames (select one with --first-frame/--last-frame)",
    )
    p.add_argument(
        "--no-sum-eds-detectors",
        dest="sum_eds_detectors",
        action="store_false",
        help="Velox: keep detectors apart (pick one with --select-signal)",
    )
    p.add_argument("--select-signal", default=None, help="index or title of the spectrum image")
    p.add_argument("--first-frame", type=int, default=None, help="Velox: first frame to read")
    p.add_argument("--last-frame", type=int, default=None, help="Velox: frame to stop before")
    p.add_argument(
        "--energy-calibration",
        nargs=2,
        type=float,
        metavar=("SCALE_KEV", "OFFSET_KEV"),
        default=None,
        help="energy axis to use when the file has none",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def rechunk_spatial(ds: xr.Dataset, chunks: tuple[int, int] = DEFAULT_CHUNKS) -> xr.Dataset:
    """Return ``ds`` dask-chunked ``(chunks[0], chunks[1])`` over ``(y, x)``, energy unsplit.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.zeros((5, 7, 4), dtype=np.uint16), energy_scale_kev=0.01)
    >>> rechunk_spatial(ds, (2, 3)).counts.chunks
    ((2, 2, 1), (3, 3, 1), (4,))
    """
    cy, cx = (int(c) for c in chunks)
    if cy < 1 or cx < 1:
        raise ValueError(f"chunks must be two positive ints (Y, X). Got {chunks!r} instead.")
    spec = {DIM_Y: cy, DIM_X: cx, DIM_ENERGY: -1}
    return ds.chunk({d: c for d, c in spec.items() if d in ds.dims})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sigma convert``; return the exit status (0 ok, 1 error)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from sigma.io import load, save

    select: int | str | None = args.select_signal
    if isinstance(select, str) and select.lstrip("-").isdigit():
        select = int(select)
    reader_kwargs: dict[str, Any] = {}
    if args.first_frame is not None:
        reader_kwargs["first_frame"] = args.first_frame
    if args.last_frame is not None:
        reader_kwargs["last_frame"] = args.last_frame
    out = Path(args.out)
    from sigma.commands._errors import report
    from sigma.validation import check_output_path

    try:  # before anything is read: suffix, not the input, writable, exists
        check_output_path(out, inputs=[args.file], overwrite=args.overwrite, what="OUT")
    except (SigmaError, OSError) as err:
        return report("sigma convert", err)
    start = time.perf_counter()
    try:
        ds = load(
            args.file,
            format=args.format,
            lazy=True,
            downsample=args.downsample,
            cutoff_at_kv=args.cutoff_at_kv,
            rebin_energy=args.rebin_energy,
            sum_frames=args.sum_frames,
            sum_eds_detectors=args.sum_eds_detectors,
            select_signal=select,
            energy_calibration=tuple(args.energy_calibration) if args.energy_calibration else None,
            **reader_kwargs,
        )
        ds = rechunk_spatial(ds, tuple(args.chunks))
        ds.attrs = append_history(
            ds.attrs, f"convert -> {os.fspath(out)!r} chunks=({args.chunks[0]}, {args.chunks[1]})"
        )
        if args.progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                save(ds, out, overwrite=args.overwrite)
        else:
            save(ds, out, overwrite=args.overwrite)
    except (SigmaError, OSError, TypeError, ValueError) as err:
        sys.stderr.write(f"sigma convert: error: {err}\n")
        return 1
    elapsed = time.perf_counter() - start
    sizes = ", ".join(f"{k}={v}" for k, v in ds.counts.sizes.items())
    sys.stdout.write(
        f"wrote {os.fspath(out)} (counts {sizes}, {ds.counts.dtype}, chunks "
        f"{args.chunks[0]} x {args.chunks[1]} x {ds.sizes[DIM_ENERGY]}) in {elapsed:.1f} s\n"
    )
    return 0
