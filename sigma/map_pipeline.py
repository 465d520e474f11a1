"""``sigma run maps/``: the workflow on element maps (no spectra).

Features -> embedding -> clusters -> results.

The maps (:func:`sigma.io.maps.load_maps`) are the features: each map is z-scored over the
pixels (vendor maps come in arbitrary, map-specific intensity units), optionally binned and 3x3
averaged, embedded by the autoencoder (or UMAP) and clustered like spectral features. Without
spectra there are no cluster spectra, NMF, library names or compositions; the results hold
``cluster_mean_intensity`` (cluster, feature), each cluster's mean of every map in the maps'
own units, which :meth:`~sigma.results.SigmaResults.phase_table` shows, and clusters are named
by the maps in which they are brightest relative to the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["element_maps_of", "run_maps"]


def element_maps_of(data: Any) -> xr.Dataset | None:
    """The element-map dataset when ``data`` is one (or a folder of maps), else None."""
    if isinstance(data, xr.Dataset):
        if "counts" not in data and "features" in data:
            return data
        return None
    if isinstance(data, (str, os.PathLike)):
        from sigma.io.maps import is_map_folder, load_maps

        if is_map_folder(data):
            return load_maps(data)
    return None


def _bin_mean(da: xr.DataArray, factor: int) -> xr.DataArray:
    return da.coarsen(y=factor, x=factor, boundary="trim").mean()


def select_maps(maps: xr.Dataset, lines: Any) -> xr.Dataset:
    """The maps ``lines`` asks for (``--lines Fe,Si``: elements, any case, or lines like Fe_Ka).

    ``None`` or ``"auto"`` keeps every map. A name matching no map is an error naming the maps
    the folder has, so a typo never runs on a silently different set of maps.
    """
    from sigma.exceptions import ConfigurationError

    if lines is None or lines == "auto":
        return maps
    names = [str(f) for f in maps["feature"].values]

    keep: list[str] = []
    for want in lines:  # map names are "Fe" or "Fe_Ka" (sigma.io.maps)
        w = str(want).strip().replace(" ", "_").lower()
        hits = [n for n in names if n.lower() == w]
        if not hits and "_" not in w:
            hits = [n for n in names if n.split("_")[0].lower() == w]
        if not hits:
            raise ConfigurationError(
                f"--lines {want!r}: the element-map folder has no such map; it has {names!r}. "
                "Give some of those (elements or lines, any case), or leave --lines out."
            )
        keep += [n for n in hits if n not in keep]
    return maps.sel(feature=keep)


def run_maps(
    maps: xr.Dataset,
    cfg: Any,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Any:
    """Run the pipeline on element maps (``features`` ``(y, x, feature)``); see the module."""
    from sigma.clustering import cluster
    from sigma.pipeline import StageTimer, _train
    from sigma.results import SigmaResults

    timer = StageTimer()
    maps = select_maps(maps, cfg.lines)
    with timer("preprocess"):
        raw = maps["features"].transpose("y", "x", "feature").astype(np.float32)
        factor = cfg.bin_factor if isinstance(cfg.bin_factor, int) else None
        if factor and factor > 1:
            raw = _bin_mean(raw, factor)
        values = raw.values.astype(np.float64)
        mean = values.reshape(-1, values.shape[-1]).mean(axis=0)
        std = values.reshape(-1, values.shape[-1]).std(axis=0)
        z = (values - mean) / np.where(std > 0, std, 1.0)
        steps = [{"name": "zscore_maps"}]
        if cfg.neighbor_average is True:
            from scipy import ndimage

            z = ndimage.uniform_filter(z, size=(3, 3, 1), mode="nearest")
            steps.append({"name": "neighbor_average", "kind": "mean3x3"})
        features = xr.Dataset(
            {"features": (("y", "x", "feature"), z.astype(np.float32))},
            coords={"y": raw["y"], "x": raw["x"], "feature": raw["feature"]},
            attrs={"source": maps.attrs.get("source", "")},
        )
    with timer("train"):
        model = None if cfg.embedding == "umap" else _train(features, cfg, show_progress)[0]
    with timer("encode"):
        if model is None:
            from sigma.embedding import umap_embedding

            latent = umap_embedding(features, random_state=cfg.seed)
        else:
            from sigma.encoding import encode

            latent = encode(model, features, show_progress=show_progress)
        ny, nx = features.sizes["y"], features.sizes["x"]
        emb = xr.DataArray(
            latent.reshape(ny, nx, -1),
            dims=("y", "x", "latent"),
            coords={"y": features.y, "x": features.x},
        )
    with timer("cluster"):
        kw = cfg.clustering.kwargs(cfg.seed)
        refine = features["features"] if cfg.refine != "none" else None
        clusters = cluster(emb, features=refine, **kw)
    with timer("analyse"):
        k = clusters.sizes["cluster"]
        lab = clusters["label"].values
        flat = raw.values.reshape(-1, raw.shape[-1])
        lb = lab.reshape(-1)
        sums = np.zeros((k, flat.shape[1]))
        np.add.at(sums, lb[lb >= 0], flat[lb >= 0])
        n = np.bincount(lb[lb >= 0], minlength=k)[:k]
        mean_int = sums / np.maximum(n, 1)[:, None]
        names = _names(mean_int, [str(f) for f in raw["feature"].values])
        results = SigmaResults.from_parts(
            clustering=clusters,
            embedding=emb,
            features=features,
            names=names,
            model_hparams=dict(model.hparams) if model is not None else {"embedding": "umap"},
            preprocessing={"input": "element_maps", "bin_factor": factor, "steps": steps},
            random_state=cfg.seed,
        )
        ds = results.dataset
        ds["cluster_mean_intensity"] = (
            ("cluster", "feature"),
            mean_int,
            {"long_name": "mean element-map intensity", "units": "map units"},
        )
        ds = ds.assign_coords(feature=raw["feature"].values)
        for nav in ("bse", "se", "haadf"):
            if nav in maps:
                img = maps[nav]
                if factor and factor > 1:
                    img = _bin_mean(img, factor)
                ds["nav_image"] = img.astype(np.float32).assign_attrs(kind=nav)
                break
        for key in ("source", "input_kind"):
            ds.attrs[key] = str(maps.attrs.get(key, ""))
        ds.attrs["elements"] = list(maps.attrs.get("elements", []))
        ds.attrs["xray_lines"] = list(maps.attrs.get("xray_lines", []))
        ds.attrs["pipeline_config"] = json.dumps(cfg.to_dict())
        results = SigmaResults(ds)
    from sigma.pipeline import _finish

    return _finish(results, timer, out, overwrite)


def _names(mean_int: np.ndarray, features: list[str]) -> list[str]:
    """Each cluster's two brightest maps relative to the map's mean over all clusters."""
    rel = mean_int / np.maximum(mean_int.mean(axis=0, keepdims=True), 1e-12)
    names = []
    for row in rel:
        top = [features[i].split("_")[0] for i in np.argsort(-row)[:2] if row[i] > 1.0]
        names.append(", ".join(dict.fromkeys(top)) or "background")
    return names
