"""Phase maps with hard edges (warped Voronoi grains + round particles) and navigation images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from sigma.datasets._phases import Phase, _atomic_number
from sigma.exceptions import SimulationParameterError

__all__ = ["phase_map", "backscatter_coefficient", "navigation_image"]


def _validate_shape(shape: object, name: str = "shape") -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise SimulationParameterError(
            f"{name} must be a pair of positive ints (ny, nx). Got {shape!r}."
        ) from err
    if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):  # type: ignore[arg-type]
        raise SimulationParameterError(
            f"{name} must be a pair of positive ints (ny, nx). Got {shape!r}."
        )
    return ny, nx


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float
) -> npt.NDArray[np.float64]:
    """Gaussian random field with unit standard deviation and correlation length ~``sigma`` px."""
    ny, nx = shape
    # draw on a coarse grid and zoom: cost independent of sigma, fine for 4k x 4k images
    step = max(1, int(sigma / 3))
    coarse = rng.standard_normal((ny // step + 3, nx // step + 3))
    coarse = ndimage.gaussian_filter(coarse, sigma / step, mode="wrap")
    field = ndimage.zoom(coarse, step, order=1)[:ny, :nx] if step > 1 else coarse[:ny, :nx]
    std = float(field.std())
    return field / std if std > 0 else field


def _paint_disk(label: npt.NDArray[np.int16], cy: float, cx: float, r: float, value: int) -> int:
    """Set pixels within ``r`` of ``(cy, cx)`` to ``value``; return how many changed."""
    ny, nx = label.shape
    y0, y1 = max(0, int(math.floor(cy - r))), min(ny, int(math.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(math.floor(cx - r))), min(nx, int(math.ceil(cx + r)) + 1)
    if y0 >= y1 or x0 >= x1:
        return 0
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    sub = label[y0:y1, x0:x1]
    changed = int(np.count_nonzero(inside & (sub != value)))
    sub[inside] = value
    return changed


def phase_map(
    shape: tuple[int, int],
    area_fractions: Sequence[float],
    *,
    grain_size_px: float | None = None,
    particle_radius_px: float | None = None,
    particle_threshold: float = 0.05,
    boundary_px: float = 1.5,
    blur: float = 0.0,
    seed: int | np.random.SeedSequence = 0,
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.float32]]:
    """Draw a phase map: grains and particles in a matrix, with hard edges (and optional blur).

    Phase 0 is the matrix (e.g. epoxy, carbon film). Phases whose area fraction is at least
    ``particle_threshold`` fill warped Voronoi grains (irregular, curved boundaries); grain
    boundaries are a ``boundary_px`` wide band of matrix (cracks filled with epoxy). Rarer phases
    are round particles with log-normal radii scattered over everything, like accessory minerals
    or nanoparticles. Every phase is guaranteed at least one pixel.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` in pixels.
    area_fractions : sequence of float
        Target area fraction of each phase (normalised to sum 1); reached within a few % for the
        grain phases and within one particle for the particle phases.
    grain_size_px : float, optional
        Typical grain diameter; default ``max(4, min(ny, nx) / 6)``.
    particle_radius_px : float, optional
        Median particle radius; default ``max(1.5, grain_size_px / 10)``.
    particle_threshold : float
        Phases with a smaller area fraction are drawn as particles.
    boundary_px : float
        Width of the matrix band along grain boundaries (0 for none).
    blur : float
        Gaussian sigma in pixels applied to the abundance maps (beam spread / interaction volume):
        pixels near boundaries get fractional abundances. 0 keeps them one-hot.
    seed : int or numpy.random.SeedSequence
        Random seed; the same seed gives the same map.

    Returns
    -------
    label : numpy.ndarray
        ``(ny, nx)`` int16, the dominant phase of each pixel.
    abundance : numpy.ndarray
        ``(n_phases, ny, nx)`` float32, non-negative, summing to 1 over phases at each pixel.

    Examples
    --------
    >>> label, abundance = phase_map((32, 48), [0.5, 0.3, 0.2], seed=1)
    >>> label.shape, abundance.shape, sorted(set(label.ravel().tolist()))
    ((32, 48), (3, 32, 48), [0, 1, 2])
    >>> bool(abs(abundance.sum(axis=0) - 1).max() < 1e-6)
    True
    """
    ny, nx = _validate_shape(shape)
    fractions = np.asarray(area_fractions, dtype=np.float64)
    if (
        fractions.ndim != 1
        or fractions.size < 1
        or not np.all(np.isfinite(fractions))
        or np.any(fractions <= 0)
    ):
        raise SimulationParameterError(
            "area_fractions must be a list of positive numbers, one per phase. "
            f"Got {area_fractions!r}."
        )
    if not (math.isfinite(blur) and blur >= 0):
        raise SimulationParameterError(f"blur must be a number of pixels >= 0. Got {blur!r}.")
    fractions = fractions / fractions.sum()
    n_phases = fractions.size
    if n_phases > ny * nx:
        raise SimulationParameterError(
            f"cannot place {n_phases} phases in a {ny}x{nx} image; use a larger shape or fewer "
            "phases."
        )
    rng = np.random.default_rng(seed)
    n_pix = ny * nx
    if grain_size_px is None:
        grain_size_px = max(4.0, min(ny, nx) / 6)
    if particle_radius_px is None:
        particle_radius_px = max(1.5, grain_size_px / 10)

    grain_phases = [p for p in range(1, n_phases) if fractions[p] >= particle_threshold]
    particle_phases = [p for p in range(1, n_phases) if fractions[p] < particle_threshold]
    label = np.zeros((ny, nx), dtype=np.int16)

    if grain_phases:
        n_cells = max(2 * (len(grain_phases) + 1), round(n_pix / grain_size_px**2))
        n_cells = min(n_cells, n_pix)
        seeds = rng.random((n_cells, 2)) * (ny, nx)
        warp = grain_size_px / 5
        wy = _smooth_noise(rng, (ny, nx), grain_size_px / 3) * warp
        wx = _smooth_noise(rng, (ny, nx), grain_size_px / 3) * warp
        yy, xx = np.mgrid[0:ny, 0:nx]
        points = np.column_stack([(yy + wy).ravel(), (xx + wx).ravel()])
        k = 2 if n_cells > 1 else 1
        dist, cell = cKDTree(seeds).query(points, k=k)
        if k == 2:
            boundary = (dist[:, 1] - dist[:, 0]) < boundary_px
            cell = cell[:, 0]
        else:
            boundary = np.zeros(n_pix, dtype=bool)
            cell = cell.ravel()
        area = np.bincount(cell[~boundary], minlength=n_cells).astype(np.float64)
        # greedy assignment of cells to phases: every grain phase first gets one cell, then each
        # cell (largest first, in random order among equals) goes to the phase furthest below target
        candidates = [0, *grain_phases]
        target = fractions[candidates] * n_pix
        target[0] = max(target[0] - boundary.sum(), 0.0)
        got = np.zeros(len(candidates))
        cell_phase = np.zeros(n_cells, dtype=np.int16)
        order = rng.permutation(n_cells)
        order = order[np.argsort(-area[order], kind="stable")]
        for i, c in enumerate(order):
            if i < len(grain_phases):
                j = i + 1
            else:
                j = int(np.argmax(target - got))
            cell_phase[c] = candidates[j]
            got[j] += area[c]
        flat = cell_phase[cell]
        flat[boundary] = 0
        label = flat.reshape(ny, nx).astype(np.int16)

    for p in particle_phases:
        target_px = fractions[p] * n_pix
        painted = 0
        for _ in range(100_000):
            if painted >= target_px:
                break
            r = float(
                np.clip(
                    rng.lognormal(math.log(particle_radius_px), 0.35), 0.75, 4 * particle_radius_px
                )
            )
            painted += _paint_disk(label, rng.random() * ny, rng.random() * nx, r, p)

    _ensure_all_present(label, n_phases, rng)

    if blur > 0:
        onehot = np.stack([(label == p).astype(np.float32) for p in range(n_phases)])
        abundance = np.stack(
            [ndimage.gaussian_filter(m, blur, mode="nearest", truncate=4.0) for m in onehot]
        )
        np.clip(abundance, 0.0, None, out=abundance)
        abundance[abundance < 1e-6] = 0.0
        abundance /= abundance.sum(axis=0, keepdims=True)
        label = np.argmax(abundance, axis=0).astype(np.int16)
    else:
        abundance = np.stack([(label == p).astype(np.float32) for p in range(n_phases)])
    return label, abundance.astype(np.float32, copy=False)


def _ensure_all_present(
    label: npt.NDArray[np.int16], n_phases: int, rng: np.random.Generator
) -> None:
    """Give every phase missing from ``label`` a small disk inside the most common phase."""
    for p in range(n_phases):
        counts = np.bincount(label.ravel(), minlength=n_phases)
        if counts[p] > 0:
            continue
        host = int(np.argmax(counts))
        depth = ndimage.distance_transform_edt(label == host)
        # a pixel at the median depth of the deepest 10 % (random among them)
        deep = np.flatnonzero(depth.ravel() >= np.quantile(depth[label == host], 0.9))
        idx = int(rng.choice(deep))
        cy, cx = divmod(idx, label.shape[1])
        r = max(0.5, min(float(depth.ravel()[idx]) - 1.0, 3.0))
        if counts[host] <= 1:
            continue  # cannot carve a pixel out of a one-pixel phase
        _paint_disk(label, float(cy), float(cx), r, p)
        if np.count_nonzero(label == host) == 0:  # never erase the host completely
            label[cy, cx] = host


def backscatter_coefficient(z: float | npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Backscattered-electron coefficient eta(Z) (Reuter's polynomial, for ~20 kV).

    Examples
    --------
    >>> [round(float(v), 3) for v in backscatter_coefficient([6, 14, 26])]
    [0.064, 0.164, 0.279]
    """
    z = np.asarray(z, dtype=np.float64)
    return -0.0254 + 0.016 * z - 1.86e-4 * z**2 + 8.3e-7 * z**3


def navigation_image(
    abundance: npt.NDArray[np.float32],
    phases: Sequence[Phase],
    *,
    kind: str = "bse",
    noise: float = 0.01,
    seed: int | np.random.SeedSequence = 0,
) -> npt.NDArray[np.float32]:
    """Navigation image from the phase abundances: BSE (eta of mean Z) or HAADF (~Z^1.7).

    The brightness of a pixel is the abundance-weighted brightness of its phases plus Gaussian
    noise of standard deviation ``noise`` times the image's range.
    """
    if kind == "bse":
        bright = np.array([float(backscatter_coefficient(p.mean_z)) for p in phases])
    elif kind == "haadf":
        # Rutherford-like Z contrast, mass-weighted rms Z
        bright = np.array(
            [sum(c * _atomic_number(el) ** 1.7 for el, c in p.composition.items()) for p in phases]
        )
        bright = bright / bright.max()
    else:
        raise SimulationParameterError(f"kind must be 'bse' or 'haadf'. Got {kind!r}.")
    img = np.tensordot(bright, abundance.astype(np.float64), axes=1)
    rng = np.random.default_rng(seed)
    span = float(bright.max() - bright.min()) or float(bright.max()) or 1.0
    img = img + rng.normal(0.0, noise * span, size=img.shape)
    return img.astype(np.float32)
