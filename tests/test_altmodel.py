"""The second, independent simulator (tests/altmodel.py) makes what it promises."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("xraylib")

import altmodel  # noqa: E402

from sigma._schema import validate_spectrum_image  # noqa: E402


def test_zircon_spectrum_has_zr_la_where_xraylib_puts_it() -> None:
    spec, _, lines = altmodel.phase_spectrum("ZrSiO4")
    assert "Zr_La" in lines
    e = altmodel._energy()
    window = (e > 1.95) & (e < 2.15)
    quartz, _, q_lines = altmodel.phase_spectrum("SiO2")
    assert "Zr_La" not in q_lines
    # the Zr La peak stands well above quartz's continuum at the same energy
    assert spec[window].sum() > 5 * quartz[window].sum()
    assert abs(float(e[window][np.argmax(spec[window])]) - 2.04) < 0.03
    assert np.isclose(spec.sum(), 1.0)


@pytest.mark.parametrize("kind", ["eight", "rare", "pair"])
def test_scene_follows_the_data_contract(kind: str) -> None:
    ds, truth = altmodel.make_scene(kind, 8.0, seed=1, shape=(64, 80))
    validate_spectrum_image(ds)
    assert ds.counts.shape == (64, 80, altmodel.N_CHANNELS)
    assert ds.counts.dtype == np.uint16
    assert abs(float(ds.counts.sum("energy").mean()) - 8.0) < 0.5
    assert truth.label.shape == (64, 80)
    assert set(np.unique(truth.label.values)) == set(range(truth.sizes["phase"]))
    assert ds.energy.attrs["units"] == "keV"


def test_rare_phase_area_and_blur_mixes_boundaries() -> None:
    ds, truth = altmodel.make_scene("rare", 5.0, seed=0, blur=1.5)
    zr = list(truth.phase.values).index("zircon")
    assert 0.002 < float(truth.area_fraction[zr]) < 0.005
    mixed = (truth.abundance.max("phase") < 0.9).mean()
    assert 0.02 < float(mixed) < 0.5
