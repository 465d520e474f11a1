"""Encode pixels with a trained autoencoder, in batches, and store the latent as a Dataset.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from sigma.model import AutoEncoder
>>> f = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
>>> ds = xr.Dataset({"features": (("y", "x", "feature"), f)}, coords={"feature": ["a", "b", "c"]})
>>> emb = encode_dataset(AutoEncoder(n_features=3), ds, show_progress=False)
>>> emb["embedding"].dims
('y', 'x', 'latent')
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import xarray as xr
from tqdm.auto import tqdm

from sigma._checks import check_int
from sigma._schema import (
    DIM_FEATURE,
    DIM_LATENT,
    DIM_X,
    DIM_Y,
    FEATURES,
    METADATA_ATTRS,
    append_history,
    validate_features,
)
from sigma.exceptions import ConfigurationError, SchemaError

__all__ = ["encode", "embedding_dataset", "encode_dataset", "write_embedding"]

logger = logging.getLogger(__name__)

EMBEDDING = "embedding"


def _as_feature_array(features: Any) -> npt.NDArray[np.float32]:
    if isinstance(features, xr.Dataset):
        validate_features(features, where="encode")
        features = features[FEATURES]
    if isinstance(features, xr.DataArray):
        if DIM_FEATURE not in features.dims:
            raise SchemaError(
                f"encode: dimension 'feature' not found in array dimensions {features.dims!r}."
            )
        dims = [d for d in features.dims if d != DIM_FEATURE] + [DIM_FEATURE]
        features = features.transpose(*dims).values
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim < 1:
        raise SchemaError(
            f"encode: features must have a last axis of features. Got shape {arr.shape!r}."
        )
    return arr


def encode(
    model: torch.nn.Module,
    features: Any,
    *,
    batch_size: int = 65536,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> npt.NDArray[np.float32]:
    """Return the latent coordinates of every pixel, computed in batches.

    Parameters
    ----------
    model : torch.nn.Module
        A trained :class:`sigma.model.AutoEncoder` (anything with ``encode(x)``). It is not
        modified: its device and train/eval mode are restored afterwards.
    features : numpy.ndarray, torch.Tensor, xr.DataArray or xr.Dataset
        Shape ``(..., n_features)`` (e.g. ``(n_pixels, F)`` or ``(y, x, F)``), a DataArray with a
        ``feature`` dim, or a features Dataset.
    batch_size : int
        Pixels per forward pass; 65536 keeps memory bounded for images of millions of pixels.
    device : str, torch.device or None
        Where to run; None picks CUDA when available, else the CPU.
    show_progress : bool
        Show a tqdm progress bar over batches.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(..., latent_dim)`` (the leading shape of ``features``). For a VAE this
        is the posterior mean.

    Raises
    ------
    SchemaError
        If the features' last axis does not match the model's input size, or holds NaN/inf.
    """
    batch_size = check_int("batch_size", batch_size, 1, error=ConfigurationError)
    arr = _as_feature_array(features)
    lead, n_feat = arr.shape[:-1], arr.shape[-1]
    hparams = getattr(model, "hparams", None)
    expected = hparams.get("n_features") if hparams is not None else None
    if expected is not None and expected != n_feat:
        raise SchemaError(
            f"encode: the model was trained on {expected} features but the input has {n_feat} "
            "(last axis). Preprocess the data with the same Preprocessor the model was "
            "trained with."
        )
    flat = arr.reshape(-1, n_feat)
    if not np.isfinite(flat).all():
        raise SchemaError(
            f"encode: features hold {int((~np.isfinite(flat)).sum())} NaN or inf values; "
            "fill them first."
        )
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    first = next(model.parameters(), None)
    old_device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    out: list[npt.NDArray[np.float32]] = []
    try:
        model.to(dev)
        model.eval()
        with torch.inference_mode():
            starts = range(0, flat.shape[0], batch_size)
            for start in tqdm(starts, desc="encode", unit="batch", disable=not show_progress):
                xb = torch.from_numpy(flat[start : start + batch_size]).to(dev, non_blocking=True)
                zb = model.encode(xb)  # type: ignore[operator]
                out.append(zb.float().cpu().numpy())
    finally:
        model.to(old_device)
        model.train(was_training)
    latent = np.concatenate(out, axis=0) if out else np.empty((0, 0), dtype=np.float32)
    return latent.reshape(*lead, latent.shape[-1]).astype(np.float32, copy=False)


def embedding_dataset(
    latent: npt.NDArray[np.floating[Any]],
    like: xr.Dataset,
    *,
    model_hparams: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Put latent coordinates into a Dataset with ``embedding`` ``(y, x, latent)``.

    Parameters
    ----------
    latent : numpy.ndarray
        ``(y * x, latent_dim)`` in row-major pixel order, or ``(y, x, latent_dim)``.
    like : xr.Dataset
        The features dataset the latent came from: its ``y``/``x`` coords (with units) and attrs
        are copied (not modified).
    model_hparams : dict or None
        Stored as JSON in ``attrs["model_hparams"]``.

    Returns
    -------
    xr.Dataset
        ``embedding`` float32 ``(y, x, latent)``, coords ``y``, ``x`` and ``latent`` (0, 1, ...).
    """
    ny, nx = int(like.sizes[DIM_Y]), int(like.sizes[DIM_X])
    z = np.asarray(latent, dtype=np.float32)
    if z.ndim == 2 and z.shape[0] == ny * nx:
        z = z.reshape(ny, nx, z.shape[1])
    if z.ndim != 3 or z.shape[:2] != (ny, nx):
        raise SchemaError(
            f"embedding_dataset: latent of shape {np.shape(latent)!r} does not match the image's "
            f"{ny} x {nx} pixels; give (y*x, latent) in row-major order or (y, x, latent)."
        )
    coords: dict[str, Any] = {d: like[d] for d in (DIM_Y, DIM_X) if d in like.coords}
    coords[DIM_LATENT] = xr.DataArray(
        np.arange(z.shape[2]), dims=DIM_LATENT, attrs={"long_name": "latent dimension"}
    )
    attrs = {k: v for k, v in like.attrs.items() if k in (*METADATA_ATTRS, "preprocessing")}
    if model_hparams is not None:
        attrs["model_hparams"] = json.dumps(model_hparams, default=str)
    attrs = append_history(
        attrs, f"sigma.encoding: encoded {ny * nx} pixels to {z.shape[2]} latent dims"
    )
    emb = xr.DataArray(
        z,
        dims=(DIM_Y, DIM_X, DIM_LATENT),
        attrs={"long_name": "autoencoder latent coordinates", "units": "1"},
    )
    return xr.Dataset({EMBEDDING: emb}, coords=coords, attrs=attrs)


def encode_dataset(model: torch.nn.Module, features: xr.Dataset, **kwargs: Any) -> xr.Dataset:
    """Encode a features Dataset and return :func:`embedding_dataset` of the result.

    ``**kwargs`` go to :func:`encode` (``batch_size``, ``device``, ``show_progress``).
    """
    validate_features(features, where="encode_dataset")
    latent = encode(model, features, **kwargs)
    hparams = dict(getattr(model, "hparams", {}) or {})
    return embedding_dataset(latent, features, model_hparams=hparams or None)


def write_embedding(ds: xr.Dataset, path: str | Path) -> Path:
    """Write an embedding Dataset to Zarr (``.zarr``) or NetCDF via h5netcdf (any other suffix).

    Existing files are replaced. Returns the path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from sigma.io._atomic import write_atomically

    def write(tmp: Path) -> None:  # a temporary sibling, renamed into place when complete
        if p.suffix == ".zarr":
            ds.to_zarr(tmp, mode="w", consolidated=False)
        else:
            ds.to_netcdf(tmp, engine="h5netcdf")

    write_atomically(p, write, is_store=p.suffix == ".zarr")
    logger.info("wrote the latent space of %d pixels to %s", ds.sizes[DIM_Y] * ds.sizes[DIM_X], p)
    return p


def _dask_client() -> Any:
    """The active Dask distributed client, or None (no cluster, or distributed not installed)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def _encode_block(block: np.ndarray, hparams: dict[str, Any], state: dict[str, Any]) -> np.ndarray:
    """Encode one ``(rows, x, feature)`` block on a Dask worker (the model is rebuilt there)."""
    from sigma.model import AutoEncoder

    model = AutoEncoder(**hparams)
    model.load_state_dict(state)
    return encode(model, block, show_progress=False, device="cpu").reshape(*block.shape[:2], -1)


def _encode_on_cluster(model: Any, features: xr.Dataset, rows_per_task: int = 64) -> np.ndarray:
    """Stream the pixels through the encoder on the Dask workers, a block of image rows per task."""
    import dask.array as da

    data = features["features"].values
    rows = max(1, min(rows_per_task, data.shape[0]))
    blocks = da.from_array(data, chunks=(rows, data.shape[1], data.shape[2]))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    latent_dim = int(model.hparams["latent_dim"])
    out = blocks.map_blocks(
        _encode_block,
        dict(model.hparams),
        state,
        chunks=(blocks.chunks[0], (data.shape[1],), (latent_dim,)),
        dtype=np.float32,
    )
    return np.asarray(out.compute())


def encode_pixels(model: Any, features: xr.Dataset, *, show_progress: bool = True) -> np.ndarray:
    """Encode every pixel: on the active Dask distributed cluster if there is one, else here.

    Returns the latent as a ``(y * x, latent)`` float32 array (or ``(y, x, latent)`` from the
    cluster path); the caller reshapes.
    """
    if _dask_client() is not None:
        return _encode_on_cluster(model, features)
    return encode(model, features, show_progress=show_progress)
