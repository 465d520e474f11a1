"""Write and read sigma datasets as NetCDF (h5netcdf) or Zarr, exactly and without pickles.

NetCDF and Zarr attributes hold numbers, strings and lists of numbers or strings, but NetCDF
turns a one-element list into a scalar and an empty list into an empty float array, and neither
format holds dicts, booleans or ``None``. :func:`save_dataset` therefore stores every attr of
those kinds (lists, tuples, dicts, bools, ``None``) as a JSON string and names the encoded keys in
the attr ``_sigma_json_attrs``; :func:`open_dataset` decodes them, so attrs come back with their
Python types. String arrays are written to Zarr as variable-length UTF-8 (which has a Zarr v3
specification) and read back as fixed-width numpy unicode arrays, as NetCDF gives them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from sigma.exceptions import CorruptFileError, UnsupportedFormatError
from sigma.io import _atomic

__all__ = ["NETCDF_EXTENSIONS", "ZARR_EXTENSIONS", "save_dataset", "open_dataset", "store_kind"]

logger = logging.getLogger(__name__)

NETCDF_EXTENSIONS = (".nc", ".nc4", ".h5", ".netcdf")
ZARR_EXTENSIONS = (".zarr",)
_JSON_KEYS_ATTR = "_sigma_json_attrs"


def store_kind(path: str | os.PathLike[str], *, where: str = "path") -> Literal["netcdf", "zarr"]:
    """Return ``"netcdf"`` or ``"zarr"`` from the extension of ``path``.

    Raises
    ------
    UnsupportedFormatError
        When the extension is neither a NetCDF nor a Zarr one.
    """
    suffix = Path(path).suffix.lower()
    if suffix in NETCDF_EXTENSIONS:
        return "netcdf"
    if suffix in ZARR_EXTENSIONS:
        return "zarr"
    raise UnsupportedFormatError(
        f"{where} {os.fspath(path)!r}: sigma writes NetCDF ({', '.join(NETCDF_EXTENSIONS)}) or "
        f"Zarr ({', '.join(ZARR_EXTENSIONS)}), got extension {suffix!r}. Choose one of those "
        "extensions, e.g. 'map.nc' or 'map.zarr'."
    )


def _needs_json(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, bool, np.bool_)) or value is None


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    return value


def _encode_attrs(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a copy of ``attrs`` with lists, dicts, bools and None as JSON strings."""
    out: dict[str, Any] = {}
    encoded: list[str] = []
    for key, value in attrs.items():
        if key == _JSON_KEYS_ATTR:
            continue
        if _needs_json(value):
            try:
                out[key] = json.dumps(_to_jsonable(value), allow_nan=True)
            except TypeError as err:
                raise TypeError(
                    f"{where}: attribute {key!r} holds {value!r}, which cannot be written to "
                    "NetCDF/Zarr. Attributes may hold numbers, strings, and lists or dicts of "
                    "them; "
                    "convert it, e.g. to str."
                ) from err
            encoded.append(key)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "OUS":
            out[key] = [str(v) for v in value.tolist()]
        else:
            out[key] = value
    if encoded:
        out[_JSON_KEYS_ATTR] = json.dumps(encoded)
    return out


def _decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`_encode_attrs` (and turn numpy scalars back into Python numbers)."""
    keys_json = attrs.get(_JSON_KEYS_ATTR)
    encoded = set(json.loads(keys_json)) if isinstance(keys_json, str) else set()
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == _JSON_KEYS_ATTR:
            continue
        if key in encoded:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


#: spatial chunk edge for NetCDF variables, so that lazy reads touch only what they need
NETCDF_SPATIAL_CHUNK = 128
_SPATIAL_DIMS = ("y", "x")


def _netcdf_storage(var: xr.Variable) -> dict[str, Any]:
    """Chunk and compress large numeric NetCDF variables (HDF5 chunks + gzip level 1 + shuffle).

    Chunks are ``128 x 128`` over ``(y, x)`` and whole along the other dims (whole spectra),
    so ``open_dataset(lazy=True)`` reads in blocks, and sparse count cubes shrink on disk.
    """
    if var.ndim < 2 or var.size < 4096 or var.dtype.kind not in "iufb":
        return {}
    sizes = tuple(
        min(NETCDF_SPATIAL_CHUNK, n) if dim in _SPATIAL_DIMS else n
        for dim, n in zip(var.dims, var.shape, strict=True)
    )
    return {"chunksizes": sizes, "zlib": True, "complevel": 1, "shuffle": True}


def _prepare_for_write(ds: xr.Dataset, kind: str) -> xr.Dataset:
    """Return a shallow copy of ``ds`` with encoded attrs, clean encodings and Zarr-ready dtypes."""
    out = ds.copy(deep=False)
    out.attrs = _encode_attrs(ds.attrs, "dataset attrs")
    for name in list(out.variables):
        var = out.variables[name]
        new_attrs = _encode_attrs(ds.variables[name].attrs, f"variable {name!r} attrs")
        # encodings inherited from the file a dataset came from (chunk sizes, compression of
        # another format) can clash with the target; start clean and let xarray choose.
        # (the in-memory dtype is what gets written: an inherited 'dtype' could cast silently)
        keep = {k: v for k, v in var.encoding.items() if k in ("units", "calendar")}
        if kind == "netcdf":
            keep.update(_netcdf_storage(var))
        if kind == "zarr" and var.dtype.kind == "U":
            # fixed-width UTF-32 has no Zarr v3 spec (zarr warns); variable-length UTF-8 has one
            replacement = xr.Variable(var.dims, var.values.astype(object), attrs=new_attrs)
            keep.pop("dtype", None)
            replacement.encoding = keep
            if name in out.coords:
                out = out.assign_coords({name: replacement})
            else:
                out[name] = replacement
            continue
        var.attrs = new_attrs
        var.encoding = keep
    return out


def _uniform_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dask variables whose chunks Zarr cannot store (irregular interior chunks)."""
    fixes: dict[Hashable, int] = {}
    for var in ds.variables.values():
        if var.chunks is None:
            continue
        for dim, sizes in zip(var.dims, var.chunks, strict=True):
            body = sizes[:-1]
            if body and (len(set(body)) > 1 or sizes[-1] > body[0]):
                fixes[dim] = max(sizes)
    if fixes:
        logger.info("rechunking %s so that Zarr can store the dask chunks", fixes)
        return ds.chunk(fixes)
    return ds


def _refuse_overwriting_own_source(ds: xr.Dataset, target: Path) -> None:
    """Raise if lazily loaded ``ds`` still reads from ``target`` (overwriting would destroy it)."""
    if all(var.chunks is None for var in ds.variables.values()):
        return
    sources = {ds.encoding.get("source")} | {
        v.encoding.get("source") for v in ds.variables.values()
    }
    resolved = target.resolve()
    if any(src and Path(src).resolve() == resolved for src in sources):
        raise ValueError(
            f"cannot overwrite {os.fspath(target)!r}: the dataset was opened lazily from that "
            "same file and still reads from it. Load it into memory first (ds.load()), or write "
            "to another path."
        )


def save_dataset(ds: xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``ds`` to NetCDF (h5netcdf engine) or Zarr, chosen by the extension of ``path``.

    See :func:`sigma.io.save` for the documentation.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"ds must be an xarray.Dataset, got {type(ds).__name__}. Wrap a DataArray with "
            "da.to_dataset(name='counts')."
        )
    target = Path(path)
    kind = store_kind(target)
    if target.exists():
        if not overwrite:
            raise FileExistsError(
                f"{os.fspath(target)!r} already exists; sigma never overwrites a file unless "
                "asked. "
                "Pass overwrite=True (or --overwrite on the command line), or choose another path."
            )
        _refuse_overwriting_own_source(ds, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prepared = _prepare_for_write(ds, kind)
    if kind == "zarr":
        prepared.attrs[_atomic.MARKER_ATTR] = _atomic.INCOMPLETE

    def write(tmp: Path) -> None:  # into a temporary sibling, renamed into place when complete
        if kind == "netcdf":
            _write_netcdf(prepared, tmp, target)
        else:
            _uniform_chunks(prepared).to_zarr(tmp, mode="w-", consolidated=False, compute=True)

    _atomic.write_atomically(
        target, write, is_store=kind == "zarr", finish=_mark_complete if kind == "zarr" else None
    )
    logger.info("wrote %s", target)
    return target


#: NetCDF files up to this size are built in memory when the disk may be too full for them
_BUFFER_LIMIT_BYTES = 2 * 1024**3


def _write_netcdf(ds: xr.Dataset, tmp: Path, target: Path) -> None:
    """Write NetCDF to ``tmp`` without letting a full disk crash the process.

    HDF5 cannot recover from a failed write: h5py raises, then crashes the interpreter
    (SIGSEGV) when it frees the broken file. So when the free space might not hold the
    uncompressed data, the file is built in memory and written with plain file I/O, whose
    ``ENOSPC`` is an ordinary error; when it is too large for that, the write is refused up front.
    """
    import errno
    import shutil

    need = int(ds.nbytes * 1.05) + 1024**2  # uncompressed data plus metadata: an upper bound
    free = shutil.disk_usage(target.parent).free
    if need <= free:
        ds.to_netcdf(tmp, engine="h5netcdf", mode="w", compute=True)
        return
    if need > _BUFFER_LIMIT_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"{os.fspath(target)!r} may need up to {need / 1024**2:.0f} MB but the disk has "
            f"{free / 1024**2:.0f} MB free",
        )
    data = ds.to_netcdf(None, engine="h5netcdf", compute=True)
    with open(tmp, "wb") as fh:
        fh.write(memoryview(data))
        fh.flush()
        os.fsync(fh.fileno())


def _stored_chunks(path: Path) -> dict[str, int]:
    import zarr

    group = zarr.open_group(path, mode="r")
    return {name: int(arr.nchunks_initialized) for name, arr in group.arrays()}


def _mark_complete(path: Path) -> None:
    """Written last into a Zarr store: the number of stored chunks of each variable."""
    import zarr

    counts = _stored_chunks(path)
    zarr.open_group(path, mode="r+").attrs.update({_atomic.MARKER_ATTR: json.dumps(counts)})


def _check_zarr_complete(source: Path, attrs: dict[str, Any]) -> None:
    record = attrs.get(_atomic.MARKER_ATTR)
    if record is None:  # written before sigma kept the record, or by another program
        return
    if record == _atomic.INCOMPLETE:
        raise CorruptFileError(
            f"{os.fspath(source)!r} is an incomplete Zarr store: the write that made it was cut "
            "short (killed, or the disk filled up) before it finished. Write it again."
        )
    expected = json.loads(str(record))
    stored = _stored_chunks(source)
    lost = {k: f"{stored.get(k, 0)} of {n}" for k, n in expected.items() if stored.get(k, 0) < n}
    if lost:
        raise CorruptFileError(
            f"{os.fspath(source)!r}: chunks are missing from the Zarr store (stored chunks of "
            f"{lost!r}); missing chunks would read as zeros. The store was damaged after it was "
            "written (a partial copy?); copy or write it again."
        )


def _restore_strings(ds: xr.Dataset) -> xr.Dataset:
    """Give variable-length string variables a fixed-width numpy unicode dtype."""
    for name in list(ds.variables):
        var = ds.variables[name]
        kind = var.dtype.kind
        if kind in "OT" and var.size and var.ndim:
            values = np.asarray(var.values)
            if all(isinstance(v, str) for v in values.ravel().tolist()):
                fixed = np.array(values.tolist(), dtype=str)
                replacement = xr.Variable(var.dims, fixed, attrs=var.attrs)
                replacement.encoding = var.encoding
                if name in ds.coords:
                    ds = ds.assign_coords({name: replacement})
                else:
                    ds[name] = replacement
    return ds


def open_dataset(path: str | os.PathLike[str], *, lazy: bool = False) -> xr.Dataset:
    """Open a dataset written by :func:`save_dataset` (or any NetCDF/Zarr file xarray reads).

    See :func:`sigma.io.open_dataset` for the documentation.
    """
    source = Path(path)
    kind = store_kind(source)
    if not source.exists():
        raise FileNotFoundError(
            f"{os.fspath(source)!r} does not exist. Check the path (current folder: "
            f"{os.fspath(Path.cwd())!r})."
        )
    kwargs: dict[str, Any] = (
        {"engine": "h5netcdf"} if kind == "netcdf" else {"engine": "zarr", "consolidated": False}
    )
    try:
        if lazy:
            ds = xr.open_dataset(source, chunks={}, **kwargs)
        else:
            with xr.open_dataset(source, **kwargs) as opened:
                ds = opened.load()
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptFileError(
            f"{os.fspath(source)!r}: could not read it as "
            f"{'NetCDF (HDF5)' if kind == 'netcdf' else 'Zarr'} "
            f"({type(err).__name__}: {err}). Check that the file is complete and was written by "
            "sigma.io.save or xarray; rewrite it if it was cut short."
        ) from err
    if kind == "zarr":
        _check_zarr_complete(source, ds.attrs)
    ds.attrs = _decode_attrs(ds.attrs)
    ds.attrs.pop(_atomic.MARKER_ATTR, None)
    for var in ds.variables.values():
        var.attrs = _decode_attrs(var.attrs)
    return _restore_strings(ds)
