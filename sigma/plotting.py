"""Matplotlib figures of a results dataset: phase map, cluster spectra, latent space, model choice.

Each function takes a results :class:`xarray.Dataset` (``docs/results_schema.md``), draws on
``ax`` (a new figure when None) and returns the Figure, closed so that notebooks show it once.
:class:`sigma.results.SigmaResults`' ``plot_*`` methods call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from sigma._schema import DIM_CLUSTER, DIM_ENERGY, DIM_LATENT, DIM_X, DIM_Y, as_str_list
from sigma.exceptions import EmptySelectionError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["phase_map", "cluster_spectra", "latent", "model_selection"]

#: colour of no-data pixels (label -1) in phase maps (the GUI uses the same grey)
NO_DATA_COLOR = "#9e9e9e"


def _colors(ds: xr.Dataset) -> list[str]:
    return [str(c) for c in ds["cluster_color"].values]


def _names(ds: xr.Dataset) -> list[str]:
    return [str(n) for n in ds["cluster_name"].values]


def phase_map(ds: xr.Dataset, *, ax: Any = None, legend: bool = True) -> Figure:
    """Phase map in the cluster colours, axes in physical units; returns the Figure."""
    colors, names = _colors(ds), _names(ds)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = _fig_ax(ax, (5, 4.5))
    lab = ds["label"].values.astype(float)
    lab[lab < 0] = np.nan
    n_nodata = int(np.isnan(lab).sum())
    cmap = ListedColormap(colors).with_extremes(bad=NO_DATA_COLOR)
    ext = _extent(ds)
    ax.imshow(
        lab,
        cmap=cmap,
        vmin=-0.5,
        vmax=int(ds.sizes[DIM_CLUSTER]) - 0.5,
        interpolation="nearest",
        extent=ext,
        origin="upper",
    )
    ax.set_xlabel(f"x ({ds[DIM_X].attrs.get('units', 'px')})" if DIM_X in ds.coords else "x")
    ax.set_ylabel(f"y ({ds[DIM_Y].attrs.get('units', 'px')})" if DIM_Y in ds.coords else "y")
    ax.set_title("phase map")
    if legend:
        handles = [
            Patch(color=c, label=f"{i}: {n}")
            for i, (c, n) in enumerate(zip(colors, names, strict=True))
        ]
        if n_nodata:
            handles.append(Patch(color=NO_DATA_COLOR, label=f"no data ({n_nodata:,} px)"))
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize="small",
        )
    plt.close(fig)
    return fig


def cluster_spectra(
    ds: xr.Dataset,
    *,
    ax: Any = None,
    kind: Literal["mean", "sum"] = "mean",
    log: bool = False,
    lines: bool = True,
) -> Figure:
    """Cluster spectra in the cluster colours with X-ray line markers; returns the Figure."""
    colors, names = _colors(ds), _names(ds)
    import matplotlib.pyplot as plt

    var = f"cluster_{kind}_spectrum"
    if var not in ds:
        raise EmptySelectionError(
            f"these results hold no {var!r} (made without the spectrum image)."
        )
    fig, ax = _fig_ax(ax, (7, 4))
    e = ds[DIM_ENERGY].values
    spec = ds[var].transpose(DIM_CLUSTER, DIM_ENERGY).values
    for i in range(int(ds.sizes[DIM_CLUSTER])):
        ax.plot(e, spec[i], color=colors[i], lw=1, label=f"{i}: {names[i]}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel(ds[var].attrs.get("units", "counts"))
    if lines:
        from sigma.xray import get_line

        names = as_str_list(ds.attrs.get("xray_lines"))
        top = float(np.nanmax(spec)) if spec.size else 1.0
        for name in names:
            try:
                ln = get_line(name)
            except Exception:  # noqa: BLE001 - an unknown line only loses its marker
                continue
            ax.axvline(ln.energy_kev, color="0.6", lw=0.6, ls=":")
            ax.text(
                ln.energy_kev,
                top,
                name,
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="0.3",
            )
    ax.legend(fontsize="small")
    plt.close(fig)
    return fig


def latent(
    ds: xr.Dataset,
    *,
    ax: Any = None,
    max_points: int = 50_000,
    ellipses: bool = True,
    random_state: int = 0,
) -> Figure:
    """Latent scatter coloured by cluster, with 2-sigma GMM ellipses; returns the Figure."""
    colors = _colors(ds)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    if "embedding" not in ds:
        raise EmptySelectionError(
            "these results hold no 'embedding'; pass embedding= to from_parts."
        )
    fig, ax = _fig_ax(ax, (5, 5))
    emb = (
        ds["embedding"].transpose(DIM_Y, DIM_X, DIM_LATENT).values.reshape(-1, ds.sizes[DIM_LATENT])
    )
    lab = ds["label"].values.reshape(-1)
    idx = np.arange(lab.size)
    if lab.size > max_points:
        idx = np.sort(
            np.random.default_rng(random_state).choice(lab.size, max_points, replace=False)
        )
    cols = np.array([*colors, "#bbbbbb"])
    ax.scatter(emb[idx, 0], emb[idx, 1 if emb.shape[1] > 1 else 0], c=cols[lab[idx]], s=2, lw=0)
    if ellipses and "gmm_mean" in ds and emb.shape[1] >= 2:
        for i in range(int(ds.sizes[DIM_CLUSTER])):
            mu = ds["gmm_mean"].values[i, :2]
            cov = ds["gmm_covariance"].values[i, :2, :2]
            if not np.all(np.isfinite(cov)):
                continue
            vals, vecs = np.linalg.eigh(cov)
            ang = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
            w, h = 2 * 2 * np.sqrt(np.maximum(vals[::-1], 0))
            ax.add_patch(
                Ellipse(
                    (float(mu[0]), float(mu[1])),
                    w,
                    h,
                    angle=ang,
                    fill=False,
                    color=colors[i],
                    lw=1.5,
                )
            )
    ax.set_xlabel("latent 0")
    ax.set_ylabel("latent 1")
    ax.set_title("latent space")
    plt.close(fig)
    return fig


def model_selection(ds: xr.Dataset, *, ax: Any = None) -> Figure:
    """BIC / ICL sweep and phases per k (:func:`sigma.clustering.plot_model_selection`)."""
    import matplotlib.pyplot as plt

    from sigma.clustering import plot_model_selection

    fig = plot_model_selection(ds, ax=ax)
    plt.close(fig)
    return fig


def _fig_ax(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _extent(ds: xr.Dataset) -> tuple[float, float, float, float] | None:
    if (
        DIM_X not in ds.coords
        or DIM_Y not in ds.coords
        or ds.sizes[DIM_X] < 2
        or ds.sizes[DIM_Y] < 2
    ):
        return None
    x = ds[DIM_X].values
    y = ds[DIM_Y].values
    dx = (x[-1] - x[0]) / (x.size - 1)
    dy = (y[-1] - y[0]) / (y.size - 1)
    return (
        float(x[0] - dx / 2),
        float(x[-1] + dx / 2),
        float(y[-1] + dy / 2),
        float(y[0] - dy / 2),
    )
