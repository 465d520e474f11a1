"""Net X-ray line intensities in counts (sigma.line_intensity), not z-scores (issue 15, item 2)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from sigma import line_intensity as li
from sigma.sparse_counts import pack_counts


def _results(counts, energy, lo, hi):
    ds = pack_counts(xr.DataArray(counts, dims=("y", "x", "energy")))
    return ds.assign_coords(
        energy=("energy", energy, {"units": "keV"}),
        y=np.arange(counts.shape[0]) * 0.1,
        x=np.arange(counts.shape[1]) * 0.1,
        feature=["Fe"],
        window_lo=("feature", [lo]),
        window_hi=("feature", [hi]),
    )


def test_peak_on_a_flat_background_gives_its_counts():
    energy = np.arange(0, 10, 0.01) + 0.005
    counts = np.full((2, 3, energy.size), 4, np.uint16)  # 4 counts in every channel
    peak = (energy > 6.35) & (energy < 6.45)
    counts[0, 1, peak] += 10  # 10 channels x 10 counts above the background
    net = li.net_line_intensities(_results(counts, energy, 6.30, 6.50))
    assert net.attrs["units"] == "counts"
    assert net.dims == ("y", "x", "feature")
    np.testing.assert_allclose(net.values[0, 1, 0], 100.0)
    np.testing.assert_allclose(np.delete(net.values.ravel(), 1), 0.0, atol=1e-6)


def test_sloped_background_is_removed():
    energy = np.arange(0, 10, 0.01) + 0.005
    slope = np.round(np.linspace(100, 20, energy.size)).astype(np.uint16)
    counts = np.broadcast_to(slope, (1, 2, energy.size)).copy()
    net = li.net_line_intensities(_results(counts, energy, 3.0, 3.4))
    assert np.all(np.abs(net.values) < 2.0)  # a linear background leaves ~0 net counts


def test_particle_statistics_report_net_counts():
    from gui.demo import scene_results
    from sigma.analysis import particle_statistics

    ds = scene_results((24, 32), n_phases=5, n_channels=1024, seed=1)
    calcite = int(list(ds["cluster_name"].values).index("calcite"))
    table = particle_statistics(ds, calcite)
    assert table.attrs["intensity_units"] == "counts"
    assert (table["mean_Ca"] > 1.0).all()  # calcite's Ca line: real counts per pixel
    epoxy = particle_statistics(ds, 0)
    assert abs(float((epoxy["mean_Ca"] * epoxy["n_pixels"]).sum() / epoxy["n_pixels"].sum())) < 0.5
