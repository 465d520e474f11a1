"""The results of a sigma run: one :class:`xarray.Dataset` on disk (NetCDF or Zarr) and its API.

The layout is ``docs/results_schema.md``. Reopening results needs neither torch nor the raw
file; this module imports neither torch nor Lightning (the GUI uses it).

Examples
--------
>>> import numpy as np
>>> from sigma.clustering import cluster
>>> rng = np.random.default_rng(0)
>>> emb = np.concatenate([rng.normal(0, 0.2, (8, 4, 2)), rng.normal(3, 0.2, (8, 4, 2))], axis=1)
>>> res = SigmaResults.from_parts(clustering=cluster(emb, n_components=2), embedding=emb)
>>> res.n_clusters, res.names
(2, ['phase 0', 'phase 1'])
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from sigma import analysis
from sigma._schema import (
    COUNTS,
    DIM_CLUSTER,
    DIM_ENERGY,
    DIM_LATENT,
    DIM_X,
    DIM_Y,
    METADATA_ATTRS,
    NAV_IMAGE_NAMES,
    append_history,
    as_str_list,
    validate_spectrum_image,
)
from sigma.exceptions import SchemaError
from sigma.plotting import NO_DATA_COLOR as _NO_DATA_COLOR
from sigma.plotting import _extent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["SigmaResults", "RESULTS_VERSION"]

#: value of attrs["sigma_results_version"]
RESULTS_VERSION = 1

_STR_VARS = ("cluster_name", "cluster_color")
_REQUIRED = ("label", "probability")


def _versions() -> str:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("sigma-eds", "numpy", "xarray", "scikit-learn", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return json.dumps(out)


def _as_json(value: Any) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):
        json.loads(value)  # must be JSON already
        return value
    return json.dumps(value, default=str)


def _spatial(
    arr: Any, name: str, extra_dim: str | None, ny: int, nx: int, coords: dict[str, Any]
) -> xr.DataArray:
    if isinstance(arr, xr.DataArray):
        dims = (DIM_Y, DIM_X) if extra_dim is None else (DIM_Y, DIM_X, extra_dim)
        if set(arr.dims) != set(dims):
            raise SchemaError(f"{name} must have dims {dims!r}. Got {arr.dims!r}.")
        return arr.transpose(*dims)
    a = np.asarray(arr)
    if extra_dim is None:
        a = a.reshape(ny, nx)
        return xr.DataArray(a, dims=(DIM_Y, DIM_X), coords=coords)
    if a.ndim == 2:
        a = a.reshape(ny, nx, -1)
    return xr.DataArray(a, dims=(DIM_Y, DIM_X, extra_dim), coords=coords)


#: colour of no-data pixels (label -1) in phase maps (the GUI uses the same grey)
NO_DATA_COLOR = _NO_DATA_COLOR


@dataclass(frozen=True)
class SigmaResults:
    """Immutable results of a sigma run: one :class:`xarray.Dataset` (docs/results_schema.md).

    Every edit (:meth:`merge_clusters`, :meth:`split_cluster`, :meth:`rename_cluster`,
    :meth:`recolor_cluster`) returns a new object.

    Attributes
    ----------
    dataset : xr.Dataset
        The results dataset.
    """

    dataset: xr.Dataset

    def __post_init__(self) -> None:
        ds = self.dataset
        if not isinstance(ds, xr.Dataset):
            raise SchemaError(f"SigmaResults needs an xarray.Dataset. Got {type(ds).__name__}.")
        missing = [v for v in _REQUIRED if v not in ds]
        if missing:
            raise SchemaError(
                f"results dataset lacks {missing!r} (has {list(ds.data_vars)!r}); build it with "
                "SigmaResults.from_parts(clustering=sigma.clustering.cluster(...), ...)."
            )
        if tuple(ds["label"].dims) != (DIM_Y, DIM_X):
            raise SchemaError(
                f"results 'label' must have dims ('y', 'x'). Got {ds['label'].dims!r}."
            )

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_parts(
        cls,
        *,
        clustering: xr.Dataset,
        spectrum_image: xr.Dataset | None = None,
        embedding: Any = None,
        features: xr.DataArray | xr.Dataset | None = None,
        nmf_components: int | Literal["auto"] | None = None,
        names: list[str] | None = None,
        colors: list[str] | None = None,
        name_by_lines: bool = True,
        preprocessing: Any = None,
        model_hparams: Any = None,
        random_state: int | None = 0,
        show_progress: bool = False,
        keep_counts: bool | int = True,
    ) -> SigmaResults:
        """Assemble results from the pipeline's parts.

        Parameters
        ----------
        clustering : xr.Dataset
            Output of :func:`sigma.clustering.cluster` with spatial dims (``label`` ``(y, x)``).
        spectrum_image : xr.Dataset, optional
            The (binned) raw spectrum image: gives ``total_counts``, ``sum_spectrum``, the cluster
            spectra (from raw counts, chunk by chunk), the energy axis, attrs and ``nav_image``.
        embedding : array or xr.DataArray, optional
            Latent coordinates ``(y, x, latent)``.
        features : xr.DataArray or xr.Dataset, optional
            ``(y, x, feature)`` features (or a feature Dataset with ``features``).
        nmf_components : int, "auto" or None
            Unmix the cluster mean spectra into this many NMF components (needs the spectra);
            ``"auto"`` uses their numerical rank (:func:`sigma.analysis.spectral_rank`), at most the number of
            clusters.
        names, colors : list of str, optional
            Cluster names and ``#rrggbb`` colours (default ``"phase i"`` - or the top lines when
            ``name_by_lines`` and lines are known - and tab20).
        preprocessing, model_hparams : dict or JSON str, optional
            Stored as JSON attrs.
        random_state : int, optional
            Seed of the NMF.
        show_progress : bool
            Progress bar for the spectra.
        keep_counts : bool or int
            Keep the per-pixel counts of ``spectrum_image`` as a sparse matrix
            (:mod:`sigma.sparse_counts`) so a selection's summed spectrum is exact: True within
            :data:`sigma.sparse_counts.DEFAULT_MAX_BYTES`, an int within that many bytes, False
            never. Past the budget they are left out (logged).
        """
        if "label" not in clustering or tuple(clustering["label"].dims) != (DIM_Y, DIM_X):
            raise SchemaError(
                "clustering must come from sigma.clustering.cluster() on a spatial (y, x, latent) "
                "input: 'label' with dims ('y', 'x') is needed. Got "
                f"{getattr(clustering.get('label'), 'dims', None)!r}."
            )
        ny, nx = clustering["label"].shape
        coords: dict[str, Any] = {}
        if spectrum_image is not None:
            validate_spectrum_image(spectrum_image, where="SigmaResults.from_parts")
            if spectrum_image.sizes[DIM_Y] != ny or spectrum_image.sizes[DIM_X] != nx:
                raise SchemaError(
                    "spectrum_image has (y, x) = "
                    f"{(spectrum_image.sizes[DIM_Y], spectrum_image.sizes[DIM_X])!r} "
                    f"but the labels have {(ny, nx)!r}; bin the cube like the features."
                )
            coords = {d: spectrum_image[d] for d in (DIM_Y, DIM_X)}
        else:
            coords = {d: clustering[d] for d in (DIM_Y, DIM_X) if d in clustering.coords}
        ds = clustering.drop_vars(
            [d for d in (DIM_Y, DIM_X) if d in clustering.coords]
        ).assign_coords(coords)
        k = ds.sizes[DIM_CLUSTER]
        attrs: dict[str, Any] = {}
        if spectrum_image is not None:
            attrs.update(
                {
                    key: spectrum_image.attrs.get(key)
                    for key in METADATA_ATTRS
                    if key in spectrum_image.attrs
                }
            )
            ds = analysis.add_count_summaries(
                ds, spectrum_image[COUNTS], keep_counts=keep_counts, show_progress=show_progress
            )
            for nav in NAV_IMAGE_NAMES:
                if nav in spectrum_image:
                    ds["nav_image"] = spectrum_image[nav].astype(np.float32).assign_attrs(kind=nav)
                    break
        elif "n_pixels" not in ds:
            lab = ds["label"].values
            ds["n_pixels"] = (
                DIM_CLUSTER,
                np.bincount(lab[lab >= 0], minlength=k)[:k].astype(np.int64),
            )
        if embedding is not None:
            emb = _spatial(embedding, "embedding", DIM_LATENT, ny, nx, coords)
            ds["embedding"] = (
                emb.astype(np.float32)
                .assign_coords({DIM_LATENT: np.arange(emb.shape[2])})
                .assign_attrs(long_name="latent coordinates")
            )
        if features is not None:
            if isinstance(features, xr.Dataset):
                features = features["features"]
            ds["features"] = _spatial(features, "features", "feature", ny, nx, coords).astype(
                np.float32
            )
        if nmf_components is not None:
            ds = analysis.add_nmf(ds, nmf_components, random_state=random_state)
            attrs["nmf_reconstruction_error"] = ds.attrs.pop("nmf_reconstruction_error")
        ds.attrs = {**dict(clustering.attrs), **attrs}
        if names is None:
            names = analysis.line_names(ds) if name_by_lines else [f"phase {i}" for i in range(k)]
        if colors is None:
            colors = analysis.default_colors(k)
        if len(names) != k or len(colors) != k:
            raise SchemaError(
                f"names and colors need {k} entries each. Got {len(names)} and {len(colors)}."
            )
        ds["cluster_name"] = (
            DIM_CLUSTER,
            np.array([str(v) for v in names]),
            {"long_name": "cluster name"},
        )
        ds["cluster_color"] = (
            DIM_CLUSTER,
            np.array([str(v) for v in colors]),
            {"long_name": "cluster colour"},
        )
        for key in ("elements", "xray_lines", "history"):
            ds.attrs[key] = as_str_list(ds.attrs.get(key))
        for key in ("source",):
            ds.attrs[key] = str(ds.attrs.get(key) or "")
        for key in ("beam_energy_kev", "energy_resolution_mnka_ev"):
            ds.attrs[key] = float(ds.attrs[key]) if ds.attrs.get(key) is not None else float("nan")
        ds.attrs["preprocessing"] = _as_json(preprocessing)
        ds.attrs["model_hparams"] = _as_json(model_hparams)
        ds.attrs.setdefault("clustering", "{}")
        ds.attrs["versions"] = _versions()
        ds.attrs["sigma_results_version"] = RESULTS_VERSION
        ds.attrs = append_history(ds.attrs, f"sigma.results: {k} clusters")
        return cls(ds)

    # -- views ---------------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return int(self.dataset.sizes[DIM_CLUSTER])

    @property
    def names(self) -> list[str]:
        """Cluster names."""
        return [str(v) for v in self.dataset["cluster_name"].values]

    @property
    def colors(self) -> list[str]:
        """Cluster colours ``#rrggbb``."""
        return [str(v) for v in self.dataset["cluster_color"].values]

    @property
    def label(self) -> xr.DataArray:
        """Label map ``(y, x)``."""
        return self.dataset["label"]

    @property
    def probability(self) -> xr.DataArray:
        """Membership probabilities ``(y, x, cluster)``."""
        return self.dataset["probability"]

    @property
    def clustering_info(self) -> dict[str, Any]:
        """The ``clustering`` attr decoded."""
        return dict(json.loads(self.dataset.attrs.get("clustering", "{}") or "{}"))

    def phase_table(self) -> pd.DataFrame:
        """Name, colour, pixels, area and area fraction of each cluster.

        Also the library match (:mod:`sigma.phases`), composition (:mod:`sigma.quantify`) or
        mean element-map intensities (:mod:`sigma.io.maps`) when the results have them.
        """
        from sigma.phases import extend_phase_table

        return extend_phase_table(self.dataset, analysis.phase_table(self.dataset))

    def binary_maps(self) -> xr.DataArray:
        """``(cluster, y, x)`` boolean maps."""
        return analysis.binary_maps(self.dataset)

    def top_lines(self, n: int = 3) -> dict[int, list[str]]:
        """Most enriched X-ray lines per cluster (:func:`sigma.analysis.top_lines`)."""
        return analysis.top_lines(self.dataset, n=n)

    def particle_statistics(self, cluster: int, **kwargs: Any) -> pd.DataFrame:
        """Particles of one cluster (:func:`sigma.analysis.particle_statistics`)."""
        return analysis.particle_statistics(self.dataset, cluster, **kwargs)

    # -- edits ---------------------------------------------------------------------------------
    def merge_clusters(self, clusters: list[int]) -> SigmaResults:
        """New results with ``clusters`` merged (:func:`sigma.analysis.merge_clusters`)."""
        return SigmaResults(analysis.merge_clusters(self.dataset, clusters))

    def split_cluster(
        self, cluster: int, *, counts: Any = None, random_state: int | None = 0
    ) -> SigmaResults:
        """New results with ``cluster`` split in two (:func:`sigma.analysis.split_cluster`)."""
        return SigmaResults(
            analysis.split_cluster(self.dataset, cluster, counts=counts, random_state=random_state)
        )

    def rename_cluster(self, cluster: int, name: str) -> SigmaResults:
        """New results with a cluster renamed."""
        return SigmaResults(analysis.rename_cluster(self.dataset, cluster, name))

    def recolor_cluster(self, cluster: int, color: str) -> SigmaResults:
        """New results with a cluster's colour changed."""
        return SigmaResults(analysis.recolor_cluster(self.dataset, cluster, color))

    # -- disk ----------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the results to NetCDF (``.nc``, h5netcdf) or Zarr (``.zarr``); returns the path.

        Uses :func:`sigma.io.save` (list/dict attrs kept exactly, never pickles).

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        UnsupportedFormatError
            If the suffix is neither a NetCDF nor a Zarr one.
        """
        from sigma.io import save

        path = Path(path)
        _format_of(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
        out = Path(save(self.dataset, path, overwrite=overwrite))
        logger.info("results written to %s", out)
        return out

    @classmethod
    def load(cls, path: str | Path) -> SigmaResults:
        """Read results written by :meth:`save` (NetCDF or Zarr), fully into memory.

        Needs neither torch nor the raw data file.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        UnsupportedFormatError, CorruptFileError
            For an unknown suffix or an unreadable file.
        """
        from sigma.io import open_dataset

        path = Path(path)
        _format_of(path)
        if not path.exists():
            raise FileNotFoundError(f"results file {str(path)!r} does not exist.")
        ds = open_dataset(path)
        for name in _STR_VARS:  # always plain str arrays, whatever the backend returns
            if name in ds:
                ds[name] = ds[name].copy(data=np.array([str(v) for v in ds[name].values]))
        return cls(ds)

    # -- plots (sigma.plotting) ------------------------------------------------------------------
    def plot_phase_map(self, *, ax: Any = None, legend: bool = True) -> Figure:
        """Phase map in the cluster colours, axes in physical units; returns the Figure."""
        from sigma.plotting import phase_map

        return phase_map(self.dataset, ax=ax, legend=legend)

    def plot_cluster_spectra(
        self,
        *,
        ax: Any = None,
        kind: Literal["mean", "sum"] = "mean",
        log: bool = False,
        lines: bool = True,
    ) -> Figure:
        """Cluster spectra in the cluster colours with X-ray line markers; returns the Figure."""
        from sigma.plotting import cluster_spectra

        return cluster_spectra(self.dataset, ax=ax, kind=kind, log=log, lines=lines)

    def plot_latent(
        self,
        *,
        ax: Any = None,
        max_points: int = 50_000,
        ellipses: bool = True,
        random_state: int = 0,
    ) -> Figure:
        """Latent scatter coloured by cluster, with 2-sigma GMM ellipses; returns the Figure."""
        from sigma.plotting import latent

        return latent(
            self.dataset,
            ax=ax,
            max_points=max_points,
            ellipses=ellipses,
            random_state=random_state,
        )

    def plot_model_selection(self, *, ax: Any = None) -> Figure:
        """BIC / ICL sweep and phases per k (:func:`sigma.clustering.plot_model_selection`)."""
        from sigma.plotting import model_selection

        return model_selection(self.dataset, ax=ax)

    # -- exports -------------------------------------------------------------------------------
    def export(
        self, directory: str | Path, *, overwrite: bool = False, dpi: int = 150
    ) -> list[Path]:
        """Write maps (PNG, TIFF), spectra and tables (CSV) into ``directory``; returns the paths.

        Files: ``phase_map.png``, ``phase_map.tif`` (int16 labels), ``probability.tif``
        (float32, ``(cluster, y, x)``; TIFFs carry the pixel size in micrometres), ``probability_<i>.png``, ``cluster_spectra.csv``
        (energy and one mean and one sum column per cluster), ``phase_table.csv`` and, when
        present, ``nmf_spectra.csv``, ``nmf_weights.csv`` and ``element_maps/`` (one TIFF per
        feature, ``Fe Ka.tif``: net line counts per pixel when the results keep counts, and the
        navigation image: :func:`sigma.io.maps.load_maps`).

        Raises
        ------
        FileExistsError
            If any of these files exists and ``overwrite`` is False (nothing is written then).
        """
        import matplotlib.pyplot as plt

        from sigma.io.tiff import write_tiff

        out = Path(directory)
        ds = self.dataset
        planned = [
            "phase_map.png",
            "phase_map.tif",
            "probability.tif",
            "phase_table.csv",
            *[f"probability_{i}.png" for i in range(self.n_clusters)],
        ]
        if "cluster_mean_spectrum" in ds:
            planned.append("cluster_spectra.csv")
        if "nmf_spectrum" in ds:
            planned += ["nmf_spectra.csv", "nmf_weights.csv"]
        existing = [p for p in planned if (out / p).exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"{existing!r} already exist in {str(out)!r}; pass overwrite=True to replace them."
            )
        out.mkdir(parents=True, exist_ok=True)
        written = []
        fig = self.plot_phase_map()
        fig.savefig(out / "phase_map.png", dpi=dpi, bbox_inches="tight")
        written.append(out / "phase_map.png")
        names = {str(i): name for i, name in enumerate(self.names)}
        written.append(
            write_tiff(self.label.values.astype(np.int16), out / "phase_map.tif", ds,
                       description={"map": "phase label (-1: no data)", "phases": names})
        )  # fmt: skip
        prob = self.probability.transpose(DIM_CLUSTER, DIM_Y, DIM_X).values.astype(np.float32)
        written.append(
            write_tiff(prob, out / "probability.tif", ds,
                       description={"map": "membership probability", "axes": "CYX",
                                    "phases": names})
        )  # fmt: skip
        ext = _extent(ds)
        for i in range(self.n_clusters):
            f, ax = plt.subplots(figsize=(4, 3.5), layout="constrained")
            im = ax.imshow(prob[i], vmin=0, vmax=1, cmap="viridis", extent=ext)
            f.colorbar(im, ax=ax, label="probability")
            ax.set_title(f"{i}: {self.names[i]}")
            f.savefig(out / f"probability_{i}.png", dpi=dpi)
            plt.close(f)
            written.append(out / f"probability_{i}.png")
        self.phase_table().to_csv(out / "phase_table.csv", index=False)
        written.append(out / "phase_table.csv")
        if "features" in ds:  # element maps, readable by sigma.load(out / "element_maps")
            from sigma.io.maps import write_element_maps

            written += write_element_maps(ds, out / "element_maps")
        if "cluster_mean_spectrum" in ds:
            table = {"energy_keV": ds[DIM_ENERGY].values}
            for i in range(self.n_clusters):
                table[f"mean_{i}"] = ds["cluster_mean_spectrum"].values[i]
            for i in range(self.n_clusters):
                table[f"sum_{i}"] = ds["cluster_sum_spectrum"].values[i]
            pd.DataFrame(table).to_csv(out / "cluster_spectra.csv", index=False)
            written.append(out / "cluster_spectra.csv")
        if "nmf_spectrum" in ds:
            H = ds["nmf_spectrum"].transpose("component", DIM_ENERGY).values
            pd.DataFrame(
                {
                    "energy_keV": ds[DIM_ENERGY].values,
                    **{f"component_{j}": H[j] for j in range(H.shape[0])},
                }
            ).to_csv(out / "nmf_spectra.csv", index=False)
            W = ds["nmf_weight"].transpose(DIM_CLUSTER, "component").values
            pd.DataFrame(W, columns=[f"component_{j}" for j in range(W.shape[1])]).assign(
                cluster=np.arange(W.shape[0]), name=self.names
            ).to_csv(out / "nmf_weights.csv", index=False)
            written += [out / "nmf_spectra.csv", out / "nmf_weights.csv"]
        return written


def _format_of(path: Path) -> Literal["netcdf", "zarr"]:
    suffix = path.suffix.lower()
    if suffix in (".nc", ".h5", ".nc4", ".netcdf"):
        return "netcdf"
    if suffix == ".zarr":
        return "zarr"
    from sigma.exceptions import UnsupportedFormatError

    raise UnsupportedFormatError(
        f"results path {str(path)!r} has suffix {suffix!r}; use '.nc' (NetCDF) or '.zarr' (Zarr)."
    )
