"""Simulate EDS spectrum images with ground truth: SEM and TEM scenes, the demo, a tiny cube.

The phases are laid out by :func:`sigma.datasets._scene.phase_map`, their expected spectra come
from :func:`sigma.datasets._spectrum.phase_spectrum`, and counts are sampled photon by photon
(:class:`sigma.datasets._sampling.ChannelSampler`), eagerly in blocks or lazily with dask.
:mod:`sigma.datasets` re-exports the public functions.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._checks import check_int
from sigma._schema import (
    DIM_ENERGY,
    DIM_X,
    DIM_Y,
    append_history,
    as_str_list,
    energy_coord,
    make_spectrum_image,
)
from sigma.datasets._phases import (
    SEM_DEMO_PHASES,
    TEM_DEMO_PHASES,
    Phase,
    resolve_phases,
)
from sigma.datasets._sampling import ChannelSampler
from sigma.datasets._scene import navigation_image, phase_map
from sigma.datasets._spectrum import Geometry, main_line, phase_spectrum
from sigma.exceptions import SimulationParameterError

logger = logging.getLogger(__name__)

DIM_PHASE = "phase"
_EAGER_BLOCK_ELEMENTS = 1 << 24  # 16 M counts (32 MB of uint16) per eager block
_MAX_COUNTS_PER_PIXEL = 1e6
_CUBE_PHASES = (
    "quartz",
    "hematite",
    "calcite",
    "rutile",
    "orthoclase",
    "albite",
    "ilmenite",
    "epoxy",
)


@functools.lru_cache(maxsize=64)
def _spectra(
    phases: tuple[Phase, ...],
    n_channels: int,
    scale: float,
    offset: float,
    beam_energy_kev: float,
    mnka_resolution_ev: float,
    geometry: Geometry,
    zero_peak_fraction: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Normalised spectra ``(phase, energy)`` and relative yields (mean 1) of ``phases``."""
    energy = offset + scale * np.arange(n_channels, dtype=np.float64)
    raw = np.stack(
        [
            phase_spectrum(
                p,
                energy,
                beam_energy_kev=beam_energy_kev,
                mnka_resolution_ev=mnka_resolution_ev,
                geometry=geometry,
                zero_peak_fraction=zero_peak_fraction,
                normalise=False,
            )
            for p in phases
        ]
    )
    totals = raw.sum(axis=1)
    bad = [p.name for p, t in zip(phases, totals, strict=True) if not t > 0]
    if bad:
        raise SimulationParameterError(
            f"phase(s) {bad!r} give no counts between {energy[0]:.3f} and {energy[-1]:.3f} keV at "
            f"{beam_energy_kev} kV; widen the energy range or raise beam_energy_kev."
        )
    spectra = raw / totals[:, None]
    yields = totals / totals.mean()
    spectra.setflags(write=False)
    yields.setflags(write=False)
    return spectra, yields


def _check_positive(
    name: str, value: Any, *, integer: bool = False, upper: float = math.inf
) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value) == int(value)
    if not ok or not (math.isfinite(float(value)) and 0 < float(value) <= upper):
        kind = "an int" if integer else "a number"
        raise SimulationParameterError(
            f"{name} must be {kind} in the range (0, {upper:g}]. Got {value!r} instead."
        )


def _check_chunks(chunks: Any, shape: tuple[int, int]) -> tuple[int, int] | None:
    if chunks is None:
        return None
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks), int(chunks))
    try:
        cy, cx = (int(c) for c in chunks)
    except (TypeError, ValueError) as err:
        raise SimulationParameterError(
            f"chunks must be None, an int or a pair of ints (pixels per chunk along y and x). "
            f"Got {chunks!r}."
        ) from err
    if cy < 1 or cx < 1:
        raise SimulationParameterError(f"chunks must be positive. Got {chunks!r}.")
    return min(cy, shape[0]), min(cx, shape[1])


def _eager_block(shape: tuple[int, int], n_channels: int) -> tuple[int, int]:
    ny, nx = shape
    per_row = nx * n_channels
    if per_row <= _EAGER_BLOCK_ELEMENTS:
        return max(1, min(ny, _EAGER_BLOCK_ELEMENTS // per_row)), nx
    return 1, max(1, _EAGER_BLOCK_ELEMENTS // n_channels)


def _simulate(
    *,
    func: str,
    shape: Any,
    n_channels: int,
    energy_scale_kev: float,
    energy_offset_kev: float,
    beam_energy_kev: float,
    counts_per_pixel: float,
    phases: Any,
    area_fractions: Any,
    default_phases: Mapping[str, float],
    blur: float,
    mnka_resolution_ev: float,
    zero_peak_fraction: float,
    pixel_size: float,
    pixel_units: str,
    geometry: Geometry,
    nav_kind: str,
    grain_size_px: float | None,
    particle_radius_px: float | None,
    particle_threshold: float,
    seed: int,
    chunks: Any,
    show_progress: bool,
    signal_type: str,
) -> tuple[xr.Dataset, xr.Dataset]:
    from sigma.datasets._scene import _validate_shape

    ny, nx = _validate_shape(shape)
    _check_positive("n_channels", n_channels, integer=True)
    if n_channels < 2:
        raise SimulationParameterError(f"n_channels must be at least 2. Got {n_channels!r}.")
    n_channels = int(n_channels)
    _check_positive("energy_scale_kev", energy_scale_kev)
    if not (
        isinstance(energy_offset_kev, (int, float, np.number)) and math.isfinite(energy_offset_kev)
    ):
        raise SimulationParameterError(
            f"energy_offset_kev must be a finite number of keV. Got {energy_offset_kev!r}."
        )
    _check_positive("beam_energy_kev", beam_energy_kev)
    _check_positive("counts_per_pixel", counts_per_pixel, upper=_MAX_COUNTS_PER_PIXEL)
    _check_positive("mnka_resolution_ev", mnka_resolution_ev)
    _check_positive("pixel_size", pixel_size)
    if not (isinstance(blur, (int, float, np.number)) and math.isfinite(blur) and blur >= 0):
        raise SimulationParameterError(f"blur must be a number of pixels >= 0. Got {blur!r}.")
    seed = check_int("seed", seed, 0, error=SimulationParameterError)
    block = _check_chunks(chunks, (ny, nx))
    phase_list, fractions = resolve_phases(phases, area_fractions, default_phases)
    n_phases = len(phase_list)

    spectra, yields = _spectra(
        tuple(phase_list),
        n_channels,
        float(energy_scale_kev),
        float(energy_offset_kev),
        float(beam_energy_kev),
        float(mnka_resolution_ev),
        geometry,
        float(zero_peak_fraction),
    )
    label, abundance = phase_map(
        (ny, nx),
        fractions,
        grain_size_px=grain_size_px,
        particle_radius_px=particle_radius_px,
        particle_threshold=particle_threshold,
        blur=float(blur),
        seed=np.random.SeedSequence(seed, spawn_key=(1,)),
    )
    # expected photons per pixel and phase: abundance x relative yield, scaled to the mean rate
    rate = np.tensordot(yields, abundance.astype(np.float64), axes=1)  # (y, x)
    scale = float(counts_per_pixel) / float(rate.mean())
    expected = (rate * scale).astype(np.float32)
    lam = np.moveaxis(abundance, 0, -1) * (yields * scale).astype(np.float32)  # (y, x, phase)

    peak_rate = float((spectra * yields[:, None]).max() * scale)
    dtype = (
        np.uint16
        if peak_rate + 12 * math.sqrt(peak_rate) + 20 <= np.iinfo(np.uint16).max
        else np.uint32
    )
    sampler = ChannelSampler(spectra, dtype, seed)

    if block is None:
        counts: Any = np.zeros((ny, nx, n_channels), dtype=dtype)
        by, bx = _eager_block((ny, nx), n_channels)
        starts = [(y0, x0) for y0 in range(0, ny, by) for x0 in range(0, nx, bx)]
        from tqdm.auto import tqdm

        for y0, x0 in tqdm(
            starts,
            desc=f"{func}: sampling counts",
            unit="block",
            disable=not show_progress or len(starts) < 4,
            leave=False,
        ):
            ys, xs = slice(y0, y0 + by), slice(x0, x0 + bx)
            sampler.sample(lam[ys, xs], y0, x0, out=counts[ys, xs], out_is_zero=True)
    else:
        import dask.array as da
        from dask.base import tokenize

        token = tokenize(lam, spectra, seed, block, np.dtype(dtype).str)
        lam_da = da.from_array(
            lam, chunks=(block[0], block[1], n_phases), name=f"synthetic-rate-{token}"
        )
        counts = da.map_blocks(
            sampler.dask_block,
            lam_da,
            dtype=dtype,
            chunks=(lam_da.chunks[0], lam_da.chunks[1], (n_channels,)),
            meta=np.empty((0, 0, 0), dtype=dtype),
            name=f"synthetic-counts-{token}",
        )

    e_hi = float(energy_offset_kev) + float(energy_scale_kev) * (n_channels - 1)
    e_range = (float(energy_offset_kev), e_hi)
    elements: list[str] = []
    lines: list[str] = []
    for el in sorted({el for p in phase_list for el in p.composition}, key=lambda e: _z(e)):
        name = main_line(el, float(beam_energy_kev), e_range)
        if name is not None:
            elements.append(el)
            lines.append(name)

    nav = navigation_image(
        abundance, phase_list, kind=nav_kind, seed=np.random.SeedSequence(seed, spawn_key=(2,))
    )
    call = (
        f"sigma.datasets.{func}(seed={seed}, shape={(ny, nx)!r}, n_channels={n_channels}, "
        f"energy_scale_kev={energy_scale_kev!r}, energy_offset_kev={energy_offset_kev!r}, "
        f"beam_energy_kev={beam_energy_kev!r}, counts_per_pixel={counts_per_pixel!r}, "
        f"phases={[p.name for p in phase_list]!r}, blur={blur!r}, "
        f"mnka_resolution_ev={mnka_resolution_ev!r})"
    )
    attrs = {
        "beam_energy_kev": float(beam_energy_kev),
        "elements": elements,
        "xray_lines": lines,
        "energy_resolution_mnka_ev": float(mnka_resolution_ev),
        "source": call,
        "history": [],
        "signal_type": signal_type,
        "title": f"synthetic {signal_type} spectrum image ({n_phases} phases)",
    }
    attrs = append_history(attrs, f"simulated by {call}")
    ds = make_spectrum_image(
        counts,
        energy_scale_kev=float(energy_scale_kev),
        energy_offset_kev=float(energy_offset_kev),
        pixel_size=(float(pixel_size), float(pixel_size)),
        pixel_units=pixel_units,
        attrs=attrs,
        nav_images={nav_kind: nav},
    )
    ds[nav_kind].attrs["units"] = "1" if nav_kind == "bse" else "a.u."
    if nav_kind == "bse":
        ds[nav_kind].attrs["long_name"] = (
            "BSE image (backscatter coefficient of the mean Z, with noise)"
        )
    else:
        ds[nav_kind].attrs["long_name"] = "HAADF image (Z^1.7 contrast, with noise)"

    names = [p.name for p in phase_list]
    area = np.bincount(label.ravel(), minlength=n_phases) / label.size
    truth = xr.Dataset(
        {
            "label": xr.DataArray(
                label,
                dims=(DIM_Y, DIM_X),
                attrs={"long_name": "dominant phase (index into 'phase')", "units": "1"},
            ),
            "abundance": xr.DataArray(
                abundance,
                dims=(DIM_PHASE, DIM_Y, DIM_X),
                attrs={
                    "long_name": "phase abundance (area fraction within the pixel)",
                    "units": "1",
                },
            ),
            "phase_spectrum": xr.DataArray(
                np.array(spectra),
                dims=(DIM_PHASE, DIM_ENERGY),
                attrs={
                    "long_name": "expected spectrum of the pure phase, normalised to sum 1",
                    "units": "1",
                },
            ),
            "expected_counts": xr.DataArray(
                expected,
                dims=(DIM_Y, DIM_X),
                attrs={"long_name": "expected total counts of the pixel", "units": "counts"},
            ),
            "area_fraction": xr.DataArray(
                area,
                dims=DIM_PHASE,
                attrs={"long_name": "fraction of pixels where the phase dominates", "units": "1"},
            ),
            "relative_yield": xr.DataArray(
                np.array(yields),
                dims=DIM_PHASE,
                attrs={
                    "long_name": "count rate of the pure phase relative to the mean of the phases",
                    "units": "1",
                },
            ),
        },
        coords={
            DIM_PHASE: xr.DataArray(
                np.array(names, dtype=str), dims=DIM_PHASE, attrs={"long_name": "phase name"}
            ),
            DIM_Y: ds[DIM_Y],
            DIM_X: ds[DIM_X],
            DIM_ENERGY: energy_coord(n_channels, float(energy_scale_kev), float(energy_offset_kev)),
        },
        attrs={
            "compositions": json.dumps({p.name: p.composition for p in phase_list}),
            "densities": json.dumps({p.name: p.density for p in phase_list}),
            "target_area_fractions": json.dumps(dict(zip(names, fractions, strict=True))),
            "source": call,
            "seed": seed,
            "beam_energy_kev": float(beam_energy_kev),
            "counts_per_pixel": float(counts_per_pixel),
            "blur_px": float(blur),
            "geometry": geometry,
            "history": as_str_list(attrs["history"]),
        },
    )
    logger.debug(
        "%s: %d phases, %s counts, dtype %s", func, n_phases, "lazy" if block else "eager", dtype
    )
    return ds, truth


def _z(element: str) -> int:
    from sigma.xray import ELEMENTS

    return ELEMENTS.index(element) + 1


#: the keyword arguments synthetic_sem and synthetic_tem pass to _simulate unchanged
_PASSED_THROUGH = frozenset(
    (
        "shape",
        "n_channels",
        "energy_scale_kev",
        "energy_offset_kev",
        "beam_energy_kev",
        "counts_per_pixel",
        "phases",
        "area_fractions",
        "blur",
        "mnka_resolution_ev",
        "zero_peak_fraction",
        "grain_size_px",
        "particle_radius_px",
        "particle_threshold",
        "seed",
        "chunks",
        "show_progress",
    )
)


def synthetic_sem(
    shape: tuple[int, int] = (280, 512),
    *,
    n_channels: int = 2048,
    energy_scale_kev: float = 0.01,
    energy_offset_kev: float = 0.0,
    beam_energy_kev: float = 15.0,
    counts_per_pixel: float = 30.0,
    phases: Mapping[Phase | str, float] | Sequence[Phase | str] | None = None,
    area_fractions: Sequence[float] | None = None,
    blur: float = 0.0,
    mnka_resolution_ev: float = 130.0,
    zero_peak_fraction: float = 0.03,
    pixel_size_um: float = 0.1,
    grain_size_px: float | None = None,
    particle_radius_px: float | None = None,
    particle_threshold: float = 0.05,
    seed: int = 0,
    chunks: int | tuple[int, int] | None = None,
    show_progress: bool = True,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Simulate an SEM-EDS spectrum image of a bulk sample, with its ground truth.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` in pixels.
    n_channels : int
        Number of energy channels.
    energy_scale_kev, energy_offset_kev : float
        Channel width and the centre of channel 0, in keV.
    beam_energy_kev : float
        Accelerating voltage in kV.
    counts_per_pixel : float
        Mean total counts per pixel over the image (5 to 10,000 are typical; up to 1e6 works).
        Phases differ in count rate (heavier phases give more counts), as in real maps.
    phases : dict or sequence of Phase or str, optional
        The phases, matrix first; names refer to :data:`PHASES`. A dict maps each phase to its
        area fraction. Default: the 8 phases of :data:`SEM_DEMO_PHASES` (epoxy, quartz, albite,
        orthoclase, calcite, hematite, ilmenite, rutile).
    area_fractions : sequence of float, optional
        Area fraction of each phase when ``phases`` is a sequence; default decreasing
        geometrically from the matrix.
    blur : float
        Gaussian sigma in pixels (beam spread): mixed pixels with fractional abundances at phase
        boundaries. 0 gives one-hot abundances.
    mnka_resolution_ev : float
        Detector FWHM at Mn Ka in eV.
    zero_peak_fraction : float
        Fraction of counts in the zero-energy noise peak.
    pixel_size_um : float
        Pixel size in micrometres (coordinates ``y``, ``x`` in ``um``).
    grain_size_px, particle_radius_px, particle_threshold
        Scene geometry, see :func:`phase_map`.
    seed : int
        Random seed: the same seed (and the same ``chunks``) gives an identical cube.
    chunks : int or (int, int), optional
        Pixels per chunk along ``(y, x)``: return a lazy dask array generated chunk by chunk, each
        with its own seed derived from ``seed`` and the chunk's position (the whole cube never
        sits in memory). None (default) returns a numpy array.
    show_progress : bool
        Show a progress bar while sampling large eager cubes.

    Returns
    -------
    ds : xarray.Dataset
        Spectrum image: ``counts`` (y, x, energy) uint16 (uint32 if a channel could overflow),
        ``bse`` (y, x) float32, energy in keV, pixels in um; attrs ``beam_energy_kev``,
        ``elements``, ``xray_lines`` (main line of each element inside the energy range),
        ``energy_resolution_mnka_ev``, ``source``, ``history``.
    truth : xarray.Dataset
        ``label`` (y, x) int16 dominant phase, ``abundance`` (phase, y, x) float32 summing to 1,
        ``phase_spectrum`` (phase, energy) float64 summing to 1, ``expected_counts`` (y, x),
        ``area_fraction`` and ``relative_yield`` (phase); coordinate ``phase`` holds the names;
        attrs ``compositions`` (JSON), ``seed``, ``source``.

    Raises
    ------
    SimulationParameterError
        If an argument is out of range (the message names it and the allowed values).

    See Also
    --------
    demo_scene, synthetic_tem, synthetic_cube, phase_spectrum, phase_map

    Examples
    --------
    >>> ds, truth = synthetic_sem((32, 48), n_channels=1024, counts_per_pixel=100, seed=1)
    >>> ds.counts.dims, ds.counts.dtype.name, ds.attrs["xray_lines"][:3]
    (('y', 'x', 'energy'), 'uint16', ['C_Ka', 'O_Ka', 'Na_Ka'])
    >>> truth.sizes["phase"], round(float(ds.counts.sum("energy").mean()) / 100, 1)
    (8, 1.0)
    """
    passed = {k: v for k, v in locals().items() if k in _PASSED_THROUGH}
    return _simulate(
        func="synthetic_sem",
        default_phases=SEM_DEMO_PHASES,
        pixel_size=pixel_size_um,
        pixel_units="um",
        geometry="bulk",
        nav_kind="bse",
        signal_type="EDS_SEM",
        **passed,
    )


def synthetic_tem(
    shape: tuple[int, int] = (256, 256),
    *,
    n_channels: int = 4096,
    energy_scale_kev: float = 0.01,
    energy_offset_kev: float = 0.0,
    beam_energy_kev: float = 200.0,
    counts_per_pixel: float = 50.0,
    phases: Mapping[Phase | str, float] | Sequence[Phase | str] | None = None,
    area_fractions: Sequence[float] | None = None,
    blur: float = 0.0,
    mnka_resolution_ev: float = 130.0,
    zero_peak_fraction: float = 0.03,
    pixel_size_nm: float = 1.0,
    grain_size_px: float | None = None,
    particle_radius_px: float | None = 3.0,
    particle_threshold: float = 0.1,
    seed: int = 0,
    chunks: int | tuple[int, int] | None = None,
    show_progress: bool = True,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Simulate a TEM-EDS spectrum image of a thin film, with its ground truth.

    Thin-film physics: 200 kV, no absorption in the sample, a windowless detector, a continuum
    weaker relative to the lines than in bulk, and lines up to ~40 keV (Pd K, Pt K).
    Default scene (:data:`TEM_DEMO_PHASES`): a carbon support film with anatase (TiO2) and
    tenorite (CuO) grains and FePt and Pd nanoparticles (round, radius ~3 px).
    Parameters and returns as :func:`synthetic_sem`, except that the navigation image is
    ``haadf`` (Z-contrast) and pixels are in nm (``pixel_size_nm``).

    Examples
    --------
    >>> ds, truth = synthetic_tem((24, 24), counts_per_pixel=200, seed=0)
    >>> float(ds.energy[-1]) > 40, "Pd_Ka" in ds.attrs["xray_lines"], "haadf" in ds
    (True, True, True)
    """
    passed = {k: v for k, v in locals().items() if k in _PASSED_THROUGH}
    return _simulate(
        func="synthetic_tem",
        default_phases=TEM_DEMO_PHASES,
        pixel_size=pixel_size_nm,
        pixel_units="nm",
        geometry="thin",
        nav_kind="haadf",
        signal_type="EDS_TEM",
        **passed,
    )


def demo_scene(
    *,
    seed: int = 0,
    counts_per_pixel: float = 30.0,
    blur: float = 0.0,
    chunks: int | tuple[int, int] | None = None,
    show_progress: bool = True,
) -> tuple[xr.Dataset, xr.Dataset]:
    """The default demo: a polished rock section in epoxy, 8 phases, with ground truth.

    Epoxy, quartz, albite, orthoclase and calcite grains, hematite, ilmenite and rutile
    inclusions (area fractions from 30 % down to 2 %, :data:`SEM_DEMO_PHASES`); 280 x 512 pixels
    of 0.1 um x 2048 channels of 10 eV, 15 kV, ~30 counts per pixel, 130 eV at Mn Ka. Same as
    ``synthetic_sem()`` with its defaults.

    Examples
    --------
    >>> ds, truth = demo_scene(show_progress=False)  # doctest: +SKIP
    >>> ds.counts.shape, list(truth.phase.values[:3])  # doctest: +SKIP
    ((280, 512, 2048), ['epoxy', 'quartz', 'albite'])
    """
    return synthetic_sem(
        seed=seed,
        counts_per_pixel=counts_per_pixel,
        blur=blur,
        chunks=chunks,
        show_progress=show_progress,
    )


@overload
def synthetic_cube(
    shape: tuple[int, int, int] = ...,
    *,
    n_phases: int = ...,
    counts_per_pixel: float = ...,
    seed: int = ...,
    return_truth: Literal[False] = ...,
) -> xr.Dataset: ...


@overload
def synthetic_cube(
    shape: tuple[int, int, int] = ...,
    *,
    n_phases: int = ...,
    counts_per_pixel: float = ...,
    seed: int = ...,
    return_truth: Literal[True],
) -> tuple[xr.Dataset, xr.Dataset]: ...


def synthetic_cube(
    shape: tuple[int, int, int] = (16, 16, 64),
    *,
    n_phases: int = 3,
    counts_per_pixel: float = 200.0,
    seed: int = 0,
    return_truth: bool = False,
) -> xr.Dataset | tuple[xr.Dataset, xr.Dataset]:
    """A tiny SEM spectrum image with known phases, for doctests, tests and quick demos.

    The energy axis spans 0 to ~10 keV whatever the number of channels (10.24 keV / n); phases
    are taken in order from quartz (matrix), hematite, calcite, rutile, orthoclase, albite,
    ilmenite, epoxy. Builds in a few milliseconds once the spectra are cached.

    Parameters
    ----------
    shape : (int, int, int)
        ``(ny, nx, n_channels)``.
    n_phases : int
        Number of phases, 1 to 8.
    counts_per_pixel : float
        Mean counts per pixel.
    seed : int
        Random seed.
    return_truth : bool
        Also return the ground truth (see :func:`synthetic_sem`).

    Returns
    -------
    xarray.Dataset or (xarray.Dataset, xarray.Dataset)
        The spectrum image, and the ground truth if ``return_truth``.

    Examples
    --------
    >>> ds = synthetic_cube()
    >>> dict(ds.counts.sizes), ds.energy.attrs["units"]
    ({'y': 16, 'x': 16, 'energy': 64}, 'keV')
    >>> ds, truth = synthetic_cube(n_phases=4, return_truth=True)
    >>> sorted(set(truth.label.values.ravel().tolist()))
    [0, 1, 2, 3]
    """
    try:
        ny, nx, n_channels = (int(v) for v in shape)
    except (TypeError, ValueError) as err:
        raise SimulationParameterError(
            f"shape must be (ny, nx, n_channels) ints. Got {shape!r}."
        ) from err
    if not isinstance(n_phases, (int, np.integer)) or not 1 <= n_phases <= len(_CUBE_PHASES):
        raise SimulationParameterError(
            f"n_phases must be an int in the range [1, {len(_CUBE_PHASES)}]. "
            f"Got {n_phases!r} instead."
        )
    if n_phases > ny * nx:
        raise SimulationParameterError(
            f"n_phases={n_phases} does not fit in {ny}x{nx} pixels; use a larger shape."
        )
    ds, truth = _simulate(
        func="synthetic_cube",
        shape=(ny, nx),
        n_channels=n_channels,
        energy_scale_kev=10.24 / max(n_channels, 1),
        energy_offset_kev=0.0,
        beam_energy_kev=15.0,
        counts_per_pixel=counts_per_pixel,
        phases=list(_CUBE_PHASES[:n_phases]),
        area_fractions=None,
        default_phases=SEM_DEMO_PHASES,
        blur=0.0,
        mnka_resolution_ev=130.0,
        zero_peak_fraction=0.03,
        pixel_size=0.1,
        pixel_units="um",
        geometry="bulk",
        nav_kind="bse",
        grain_size_px=None,
        particle_radius_px=None,
        particle_threshold=0.0,
        seed=seed,
        chunks=None,
        show_progress=False,
        signal_type="EDS_SEM",
    )
    return (ds, truth) if return_truth else ds
