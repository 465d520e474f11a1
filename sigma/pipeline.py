"""The whole workflow in one call: load -> preprocess -> train -> encode -> cluster -> analyse -> save.

:func:`run` is what ``sigma run`` and ``sigma demo`` call; a :class:`PipelineConfig` holds every
choice as plain data (YAML/JSON-able) and is stored in the results file, so a result says exactly
how it was made.

Examples
--------
>>> import sigma
>>> cube = sigma.datasets.synthetic_cube((24, 24, 256), n_phases=3, seed=0)
>>> res = sigma.run(cube, config={"max_epochs": 2, "clustering": {"n_components": 3}},
...                 show_progress=False)  # doctest: +SKIP
>>> res.n_clusters  # doctest: +SKIP
3
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sigma._runtime import (
    TRAINING_MODULES,
    StageTimer,
    import_in_background,
    quiet_lightning,
)
from sigma._schema import (
    COUNTS,
    DIM_ENERGY,
    append_history,
    finite_float_or_none,
    validate_spectrum_image,
)
from sigma.config import PipelineConfig, check_config
from sigma.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "run", "StageTimer", "default_steps", "summary"]


def default_steps(
    lines: str | list[str] | None = None,
    bin_factor: int | list[int] | None = None,
    neighbor_average: bool = True,
) -> list[dict[str, Any]]:
    """Sigma's default preprocessing chain (see :class:`PipelineConfig`)."""
    steps: list[dict[str, Any]] = []
    if bin_factor is not None:
        steps.append({"name": "bin_spatial", "factor": bin_factor})
    steps.append(
        {"name": "line_features", "lines": lines, "normalize": True, "ignore_below_kev": 0.1}
    )
    if neighbor_average:
        steps.append({"name": "neighbor_average", "kind": "mean3x3"})
    steps.append({"name": "zscore"})
    return steps


def _where(data: str | Path | xr.Dataset) -> str:
    return "sigma.run" if isinstance(data, xr.Dataset) else str(data)


def _load(data: str | Path | xr.Dataset, load_options: Mapping[str, Any] | None) -> xr.Dataset:
    if isinstance(data, xr.Dataset):
        return validate_spectrum_image(data, where="sigma.run")
    from sigma.validation import load_checked

    return load_checked(data, **dict(load_options or {}))


def _mark_no_data(counts_ds: xr.Dataset) -> tuple[xr.Dataset, xr.DataArray]:
    """Find the pixels without X-ray data; add ``valid_pixel`` to the cube when there are any."""
    from sigma.preprocessing.nodata import VALID, no_data_mask

    valid = ~no_data_mask(counts_ds)
    if not bool(valid.all()):
        counts_ds = counts_ds.assign(
            {VALID: valid.assign_attrs(long_name="pixel holds X-ray data")}
        )
    return counts_ds, valid


def _valid_pixels_only(features: xr.Dataset) -> xr.Dataset:
    """The features of the pixels holding data, as one (1, n_valid, feature) row for training."""
    from sigma.preprocessing.nodata import VALID

    if VALID not in features.data_vars:
        return features
    keep = np.asarray(features[VALID].values, dtype=bool).ravel()
    data = np.asarray(features["features"].values)
    flat = data.reshape(-1, data.shape[-1])[keep]
    return xr.Dataset(
        {"features": (("y", "x", "feature"), flat[None])},
        coords={"feature": features["feature"].values},
        attrs=features.attrs,
    )


def _train(features: xr.Dataset, cfg: PipelineConfig, show_progress: bool) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    from sigma.datamodule import SpectralDataModule
    from sigma.model import AutoEncoder

    pl.seed_everything(cfg.seed, verbose=False)
    dm = SpectralDataModule.from_dataset(
        _valid_pixels_only(features),
        batch_size=cfg.batch_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
    )
    dm.setup("fit")
    model = AutoEncoder(n_features=dm.n_features, **cfg.model.to_dict())
    trainer_kwargs: dict[str, Any] = {
        "max_epochs": cfg.max_epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": show_progress,
        "enable_model_summary": False,
        "callbacks": [
            EarlyStopping("val/loss", patience=cfg.early_stopping_patience, min_delta=1e-6)
        ]
        if cfg.val_fraction > 0
        else [],
    }
    trainer_kwargs.update(cfg.trainer.to_dict())  # only the options set
    with quiet_lightning():
        trainer = pl.Trainer(**trainer_kwargs)
        trainer.fit(model, datamodule=dm)
    return model, trainer


def run(
    data: str | Path | xr.Dataset,
    *,
    config: PipelineConfig | Mapping[str, Any] | str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    load_options: Mapping[str, Any] | None = None,
    show_progress: bool = True,
) -> Any:
    """Find the phases in a spectrum image: the whole sigma workflow in one call.

    Parameters
    ----------
    data : path or xr.Dataset
        A file :func:`sigma.load` reads, or a spectrum image (counts ``(y, x, energy)``).
    config : PipelineConfig, dict, path to YAML, or None
        See :class:`PipelineConfig`; None uses the defaults (line-intensity features, automatic
        number of phases).
    out : path or None
        Where to save the results (``.nc`` or ``.zarr``); None keeps them in memory only.
    overwrite : bool
        Allow replacing an existing ``out``.
    load_options : dict or None
        Reader options passed to :func:`sigma.load` (``lazy``, ``downsample``, ...).
    show_progress : bool
        Progress bars for training and long loops.

    Returns
    -------
    SigmaResults
        With ``attrs["timings"]`` (JSON: seconds per stage).

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False (checked before any work is done).
    """
    from sigma.results import SigmaResults

    if isinstance(config, PipelineConfig):
        cfg = config
    elif isinstance(config, (str, Path)):
        cfg = PipelineConfig.from_yaml(config)
    else:
        cfg = PipelineConfig.from_dict(config)
    from sigma import validation

    check_config(cfg)
    from sigma.embedding import check_embedding
    from sigma.phases import check_library

    check_library(cfg.library)
    check_embedding(cfg.embedding)
    if out is not None:  # before any work: suffix, not the input, writable, exists
        validation.check_output_path(out, inputs=validation.sources_of(data), overwrite=overwrite)
    from sigma.map_pipeline import element_maps_of, run_maps

    maps = element_maps_of(data)  # a folder of element maps: no spectra (sigma.map_pipeline)
    if maps is not None:
        return run_maps(maps, cfg, out=out, overwrite=overwrite, show_progress=show_progress)
    timer = StageTimer()
    import_in_background(TRAINING_MODULES)
    with timer("load"):
        raw = _load(data, load_options)
    with timer("preprocess"):
        # shape steps (binning, cropping) once: their integer cube feeds both the features and
        # the cluster spectra; it is held in memory when small enough, else stays lazy
        shape_steps, _ = _split_shape_steps(cfg.preprocessor())
        validation.check_bin_factor(cfg.bin_factor, raw)
        counts_ds = _apply_shape_steps(raw, shape_steps)
        del raw  # a binned cube is a new array: the full-resolution one can go now
        validation.check_loaded_cube(counts_ds, where=_where(data))
        n_pixels = counts_ds.sizes["y"] * counts_ds.sizes["x"]
        validation.check_n_components_for_pixels(cfg.clustering.n_components, n_pixels)
        validation.check_lines_excited(cfg.lines, counts_ds.attrs.get("beam_energy_kev"))
        counts_ds, valid = _mark_no_data(counts_ds)
        mean_counts = float(counts_ds[COUNTS].sum(DIM_ENERGY).where(valid).mean())
        pre = cfg.preprocessor(mean_counts)
        features = _split_shape_steps(pre)[1](counts_ds).load()
    with timer("train"):
        if cfg.embedding == "umap":  # (sigma.embedding) no network: embedded in "encode"
            model = None
        else:
            model, trainer = _train(features, cfg, show_progress)
    client = None
    with timer("encode"):
        if model is None:
            from sigma.embedding import umap_embedding

            latent = umap_embedding(features, random_state=cfg.seed)
        else:
            from sigma.encoding import _dask_client, encode_pixels

            client = _dask_client()
            latent = encode_pixels(model, features, show_progress=show_progress)
        latent = latent.reshape(features.sizes["y"], features.sizes["x"], -1)
    with timer("cluster"):
        from sigma.clustering import cluster, smooth_probabilities
        from sigma.clustering.registry import refinable

        clustering_kw = cfg.clustering.kwargs(cfg.seed)
        emb = xr.DataArray(
            latent, dims=("y", "x", "latent"), coords={"y": features.y, "x": features.x}
        )
        from sigma.clustering.refine import refinement_features

        if cfg.refine not in ("pca", "features", "none"):
            raise ConfigurationError(
                f"refine must be 'pca', 'features' or 'none'. Got {cfg.refine!r} instead."
            )
        averaged = [st for st in pre.steps if st["name"] == "neighbor_average"]
        refine_with = refinement_features(
            cfg.refine,
            counts_ds,
            features,
            method=cfg.clustering.method,
            smoothing={k: v for k, v in averaged[0].items() if k != "name"} if averaged else None,
        )
        clusters = cluster(
            emb,
            features=refine_with,
            valid=None if bool(valid.all()) else valid.values,
            **clustering_kw,
        )
        channels = _cluster_counts(counts_ds)
        auto_k = cfg.clustering.n_components == "auto"
        spatial = cfg.spatial is not False and refinable(cfg.clustering.method)
        if channels is not None and auto_k:
            clusters = _split_significant(clusters, emb, channels, cfg)
        if channels is not None and spatial:
            # the split test runs again on the spatially assigned labels
            clusters = _spatial_assign(clusters, emb, channels, counts_ds, cfg, split=auto_k)
        del channels
        if cfg.smooth_labels and cfg.smooth_labels > 0:
            clusters = smooth_probabilities(clusters, sigma=cfg.smooth_labels)
    with timer("analyse"):
        results = SigmaResults.from_parts(
            clustering=clusters,
            spectrum_image=counts_ds,
            embedding=emb,
            features=features,
            nmf_components=cfg.nmf_components or "auto",
            model_hparams=dict(model.hparams) if model is not None else {"embedding": "umap"},
            preprocessing=_full_chain(shape_steps, features, pre),
            random_state=cfg.seed,
            show_progress=show_progress,
            keep_counts=int(cfg.keep_counts_mb * 2**20) if cfg.keep_counts_mb > 0 else False,
        )
        _refer_to_source(results, data, shape_steps, load_options)
        if "cluster_sum_spectrum" in results.dataset:  # names and compositions (issue 16)
            from sigma.phases import core_spectra, identify_phases, name_unmatched_by_composition
            from sigma.quantify import quantify_results

            core = core_spectra(
                counts_ds[COUNTS], results.dataset["label"].values, results.n_clusters
            )
            if cfg.library != "none":
                results = identify_phases(
                    results, library=None if cfg.library == "default" else cfg.library, spectra=core
                )
            results = name_unmatched_by_composition(quantify_results(results, spectra=core))
        results.dataset.attrs["pipeline_config"] = json.dumps(cfg.to_dict())
        if client is not None:
            n_workers = len(client.scheduler_info().get("workers", {}))
            results.dataset.attrs.update(
                append_history(
                    results.dataset.attrs,
                    f"sigma.run: preprocessing and encoding on a Dask cluster ({n_workers} workers)",
                )
            )
    return _finish(results, timer, out, overwrite)


def _refer_to_source(
    results: Any, data: Any, shape_steps: list[dict[str, Any]], load_options: Any
) -> None:
    """Counts over the budget: the results name the input file (checked when read back)."""
    from sigma import sparse_counts

    if sparse_counts.has_counts(results.dataset) or not isinstance(data, (str, Path)):
        return
    results.dataset.attrs[sparse_counts.SOURCE_ATTR] = json.dumps(
        sparse_counts.source_reference(data, shape_steps=shape_steps, load_options=load_options)
    )


def _finish(results: Any, timer: Any, out: Any, overwrite: bool) -> Any:
    """Record the stage timings and peak memory in the results, and save them if asked."""
    results.dataset.attrs["timings"] = json.dumps(
        {k: round(v, 3) for k, v in timer.seconds.items()}
    )
    results.dataset.attrs["peak_rss_mb"] = json.dumps(
        {k: round(v, 1) for k, v in timer.peak_rss_mb.items()}
    )
    if out is not None:
        with timer("save"):
            results.save(out, overwrite=overwrite)
    return results


#: the split test and the spatial assignment hold (pixels x channels) counts a few times: at
#: most this many values
_SPLIT_MAX_VALUES = 40_000_000


def _cluster_counts(counts_ds: xr.Dataset) -> tuple[Any, np.ndarray, int] | None:
    """The binned counts above the zero peak, channels summed to about a third of the Mn Ka FWHM.

    ``(pixels, channels)`` counts, the channel centres (keV) used by the split test and the
    spatial assignment, and the block side the split test sums pixels over (1: none). Dense
    counts while they fit :data:`_SPLIT_MAX_VALUES`; for larger maps a sparse matrix (EDS
    counts are mostly zeros) and blocks that bring the split test within that budget
    (:mod:`sigma.clustering.coarse`), unless even the non-zero counts exceed it (None, logged).
    """
    from sigma.clustering.coarse import block_factor, sparse_cluster_channels
    from sigma.clustering.spatial import cluster_channels
    from sigma.preprocessing import _mnka

    energy = np.asarray(counts_ds[DIM_ENERGY].values, dtype=np.float64)
    width_ev = 1000.0 * float(np.median(np.diff(energy))) if energy.size > 1 else 0.0
    fwhm_ev = _mnka(counts_ds, None)
    factor = max(1, int(fwhm_ev / 3.0 // width_ev)) if width_ev > 0 else 1
    n_ch = int((energy >= 0.1).sum()) // factor
    n_px = counts_ds.sizes["y"] * counts_ds.sizes["x"]
    if n_ch < 2:
        logger.info("split test and spatial assignment skipped: fewer than 2 channels")
        return None
    if n_px * n_ch <= _SPLIT_MAX_VALUES and counts_ds[COUNTS].chunks is None:
        counts, centres = cluster_channels(np.asarray(counts_ds[COUNTS].values), energy, fwhm_ev)
        return counts, centres, 1
    counts, centres = sparse_cluster_channels(
        counts_ds[COUNTS].data, energy, fwhm_ev, max_nnz=_SPLIT_MAX_VALUES
    )
    if counts is None:
        logger.info(
            "split test and spatial assignment skipped: %d pixels hold more than %d non-zero "
            "channels",
            n_px,
            _SPLIT_MAX_VALUES,
        )
        return None
    b = block_factor(n_px, int(counts.shape[1]), _SPLIT_MAX_VALUES)
    logger.info(
        "%d pixels x %d channels: sparse counts (%d non-zero), split test on %d x %d blocks",
        n_px,
        n_ch,
        counts.nnz,
        b,
        b,
    )
    return counts, centres, b


def _split_significant(
    clusters: xr.Dataset,
    emb: xr.DataArray,
    channels: tuple[Any, np.ndarray, int],
    cfg: PipelineConfig,
) -> xr.Dataset:
    """More phases where the counts demand them (:func:`sigma.clustering.auto_k.split_phases`).

    On block sums for a map too large for dense counts (:mod:`sigma.clustering.coarse`).
    """
    from sigma.clustering.auto_k import coarse_channels, split_clustering
    from sigma.clustering.coarse import split_on_blocks

    counts, _, b = channels
    k_max = int(cfg.clustering.k_max)
    if b > 1 or not isinstance(counts, np.ndarray):
        return split_on_blocks(clusters, emb, counts, b, k_max=k_max, random_state=cfg.seed)
    return split_clustering(
        clusters, emb, coarse_channels(counts), k_max=k_max, random_state=cfg.seed
    )


def _spatial_assign(
    clusters: xr.Dataset,
    emb: xr.DataArray,
    channels: tuple[Any, np.ndarray, int],
    counts_ds: xr.Dataset,
    cfg: PipelineConfig,
    *,
    split: bool,
) -> xr.Dataset:
    """Potts/Poisson reassignment, the split test and the missed-phase search.

    See :func:`sigma.clustering.spatial.spatial_clustering`.
    """
    from sigma.clustering.spatial import spatial_clustering
    from sigma.preprocessing import _mnka

    fwhm_ev = _mnka(counts_ds, None)
    beam = finite_float_or_none(counts_ds.attrs.get("beam_energy_kev"))
    return spatial_clustering(
        clusters,
        emb,
        channels[0],
        channels[1],
        beta="auto" if cfg.spatial in ("auto", True) else float(cfg.spatial),
        find_missed=bool(cfg.find_missed),
        beam_energy_kev=beam,
        fwhm_mnka_ev=fwhm_ev,
        k_max=int(cfg.clustering.k_max),
        split=split,
        random_state=cfg.seed,
        split_blocks_b=channels[2],
    )


#: below this many counts per (binned) pixel the default chain averages 3x3 neighbours
SPARSE_COUNTS = 100.0
#: binned cubes up to this size are computed into memory (faster spectra); larger stay lazy
_MATERIALISE_BYTES = 2 * 1024**3


def _full_chain(shape_steps: list[dict[str, Any]], features: xr.Dataset, pre: Any) -> str:
    """The whole chain as JSON: the shape steps plus the rest as the features recorded it.

    The features' record has ``lines="auto"`` resolved to the lines found, so re-applying the
    chain to another file gives the same features.
    """
    rest = json.loads(features.attrs.get("preprocessing") or _split_shape_steps(pre)[1].to_json())
    rest["steps"] = [*shape_steps, *rest.get("steps", [])]
    return json.dumps(rest)


def _split_shape_steps(pre: Any) -> tuple[list[dict[str, Any]], Any]:
    """Split ``pre`` into its leading binning/cropping steps and a Preprocessor of the rest."""
    from sigma.preprocessing import STEPS, Preprocessor

    steps = list(pre.steps)
    n = 0
    while n < len(steps) and STEPS[steps[n]["name"]].changes_shape:
        n += 1
    return steps[:n], Preprocessor(steps=steps[n:])


def _apply_shape_steps(raw: xr.Dataset, shape_steps: list[dict[str, Any]]) -> xr.Dataset:
    """Run binning/cropping steps; the cube keeps integer counts and the navigation images.

    It is both the input of the rest of the chain and the source of the raw-count cluster
    spectra; it is computed into memory when under :data:`_MATERIALISE_BYTES`, else stays lazy.
    """
    from sigma.preprocessing import STEPS

    ds = raw
    for step in shape_steps:
        ds = STEPS[step["name"]].func(ds, **{k: v for k, v in step.items() if k != "name"})
    if ds is not raw and ds[COUNTS].nbytes <= _MATERIALISE_BYTES:
        ds = ds.compute()
    return ds


#: under this many counts per data pixel, the summary suggests binning
SPARSE_HINT_COUNTS = 5.0


def _sparse_hint(ds: xr.Dataset) -> list[str]:
    """A hint to bin a map with few counts per pixel (a pixel's phase is then mostly noise).

    Two phases whose spectra differ by a few % need hundreds of counts to tell apart; at under
    :data:`SPARSE_HINT_COUNTS` counts per data pixel the pipeline pools neighbours, but binning
    (``--bin``) gives the autoencoder more counts per pixel too: the suggested factor brings
    the map to about 20 counts per pixel.
    """
    if "total_counts" not in ds or "label" not in ds:
        return []
    valid = np.asarray(ds["label"].values) >= 0
    if not valid.any():
        return []
    mean = float(np.asarray(ds["total_counts"].values)[valid].mean())
    if mean >= SPARSE_HINT_COUNTS:
        return []
    b = max(2, math.ceil(math.sqrt(20.0 / max(mean, 1e-9))))
    # the counts are per binned pixel when the run binned already: the option is the product
    done = json.loads(ds.attrs.get("pipeline_config") or "{}").get("bin_factor") or 1
    if isinstance(done, (list, tuple)):
        by, bx = (int(v) for v in done)
        option = f"{by * b},{bx * b}"
    else:
        option = str(int(done) * b)
    return [
        f"note: {mean:.1f} counts per data pixel; phases that differ little are hard to tell "
        f"apart at this level. Try --bin {option} (about {mean * b * b:.0f} counts per pixel)."
    ]


def summary(results: Any, timings: Mapping[str, float] | None = None) -> str:
    """A short human-readable summary: phases found, pixels each, top elements, time per stage."""
    ds = results.dataset
    n = int(ds.sizes.get("cluster", 0))
    total = int(np.asarray(ds["n_pixels"].values).sum()) if "n_pixels" in ds else 0
    lines = [f"{n} phase{'' if n == 1 else 's'} found in {ds.sizes['y']} x {ds.sizes['x']} pixels:"]
    names = [
        str(ds["cluster_name"].values[k]) if "cluster_name" in ds else f"phase {k}"
        for k in range(n)
    ]
    width = min(max([24, *map(len, names)]), 60)  # the pixel column stays aligned
    for k, name in enumerate(names):
        npx = int(ds["n_pixels"].values[k]) if "n_pixels" in ds else 0
        frac = 100.0 * npx / total if total else 0.0
        line = f"  {k:>2}  {name:<{width}} {npx:>9,d} px ({frac:5.1f} %)"
        matched = "match_kind" not in ds or str(ds["match_kind"].values[k]) in (
            "single",
            "ambiguous",
        )
        if matched and "match_confidence" in ds and np.isfinite(ds["match_confidence"].values[k]):
            line += f"  match {float(ds['match_confidence'].values[k]):.2f}"
        lines.append(line)
    if "label" in ds:
        n_bad = int((np.asarray(ds["label"].values) < 0).sum())
        if n_bad:
            lines.append(
                f"  no data (label -1): {n_bad:,d} px ({100.0 * n_bad / ds['label'].size:.1f} % "
                "of the map; not counted above)"
            )
    lines.extend(_sparse_hint(ds))
    info = json.loads(ds.attrs.get("clustering") or "{}")
    added = info.get("added_phases") or []
    if added:
        what = "; ".join(
            f"{a['n_pixels']:,d} px, {a['line']} excess {a['sigma']:.0f} sigma" for a in added
        )
        lines.append(f"{len(added)} rare phase{'s' if len(added) > 1 else ''} added: {what}")
    if timings:
        lines.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    rss = json.loads(ds.attrs.get("peak_rss_mb") or "{}")
    if rss:
        lines.append(f"peak memory: {max(rss.values()) / 1024:.2f} GB")
    return "\n".join(lines)
