"""Matplotlib figures of the clustering: the model-selection sweep and the split tests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from sigma.clustering.result import DIM_K
from sigma.exceptions import EmptySelectionError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def plot_model_selection(clustering: xr.Dataset, *, ax: Any = None) -> Figure:
    """Plot the criteria that chose the number of phases; returns the Figure.

    Left: the BIC / ICL sweep of the latent Gaussian mixture and the number of phases each
    ``k`` gives. Right (when the counts were tested for more phases, see
    :mod:`sigma.clustering.auto_k`, and no ``ax`` is given): every split test, its density
    valley and the valley it needed; the title gives the phases from both.

    Parameters
    ----------
    clustering : xr.Dataset
        Output of :func:`cluster` (or a results dataset) with ``model_selection_score``.
    ax : matplotlib Axes, optional
        Axes to draw on (a new figure otherwise).
    """
    import matplotlib.pyplot as plt

    if "model_selection_score" not in clustering:
        raise EmptySelectionError(
            "plot_model_selection: the dataset has no 'model_selection_score' (no sweep was run: "
            "n_components was given). Cluster with n_components='auto' to get a curve."
        )
    info = json.loads(clustering.attrs.get("clustering", "{}"))
    tests = info.get("split_tests") or []
    ax_t = None
    if ax is None and tests:
        fig, (ax, ax_t) = plt.subplots(
            1, 2, figsize=(11, 3.8), layout="constrained", width_ratios=(1.1, 1.0)
        )
    elif ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    else:
        fig = ax.figure
    ks = clustering[DIM_K].values
    ax.plot(ks, clustering["model_selection_score"].values, "o-", label="BIC")
    if "model_selection_icl" in clustering:
        ax.plot(ks, clustering["model_selection_icl"].values, "s--", label="ICL")
    ax.set_xlabel("number of Gaussians k")
    ax.set_ylabel("criterion (lower is better)")
    if "n_gaussians" in info:
        ax.axvline(
            info["n_gaussians"],
            color="0.5",
            ls=":",
            label=f"chosen k = {info['n_gaussians']} ({info.get('criterion', 'criterion')})",
        )
    if "model_selection_n_phases" in clustering:
        ax2 = ax.twinx()
        ax2.step(
            ks,
            clustering["model_selection_n_phases"].values,
            where="mid",
            color="C3",
            label="phases",
        )
        ax2.set_ylabel("phases after merging", color="C3")
    n_split = sum(bool(t.get("split")) for t in tests)
    title = f"{info.get('n_components', '?')} phases ({info.get('criterion', '')}"
    title += f" + {n_split} split{'s' if n_split != 1 else ''})" if tests else ")"
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    if ax_t is not None:
        _plot_split_tests(tests, ax_t)
    return fig


def _plot_split_tests(tests: list[dict[str, Any]], ax_t: Any) -> None:
    """Beside the sweep: every split test, its density valley and the valley it needed."""
    x = np.arange(len(tests))
    valley = np.array([t["valley"] for t in tests], dtype=float)
    need = np.array([t.get("valley_max", 0.5) for t in tests], dtype=float)
    ok = np.array([bool(t["split"]) for t in tests])
    moved = np.array([t.get("moved_to") is not None for t in tests])
    new = ok & ~moved
    ax_t.bar(x[new], valley[new], color="C2", label="split: a new phase")
    if moved.any():
        ax_t.bar(x[moved], valley[moved], color="C0", label="split: joins the phase it matches")
    ax_t.bar(x[~ok], valley[~ok], color="0.6", label="kept (one phase)")
    ax_t.step(x, need, where="mid", color="C3", ls="--", label="deepest valley allowed")
    ax_t.set_xticks(
        x,
        [f"{t['phase']}: {t['pixels'][0]}/{t['pixels'][1]} px" for t in tests],
        rotation=60,
        ha="right",
        fontsize="x-small",
    )
    ax_t.set_ylim(0, 1.05)
    ax_t.set_ylabel("density valley between the halves (1 = none)")
    ax_t.set_title("split tests on the counts (each also needs G-test p < alpha)", fontsize="small")
    ax_t.legend(fontsize="x-small", loc="upper left")
