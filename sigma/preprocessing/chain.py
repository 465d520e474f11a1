"""The Preprocessor chain: steps as plain data, checked, applied in order and recorded."""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import xarray as xr

from sigma._schema import (
    as_str_list,
)
from sigma.preprocessing._common import (
    _require_counts,
)
from sigma.preprocessing.counts import (
    bin_spatial,
    crop_energy,
    normalize_total,
    rebin_energy,
    remove_noise_peak,
)
from sigma.preprocessing.features import neighbor_average, softmax, zscore
from sigma.preprocessing.pca import pca_features
from sigma.preprocessing.windows import line_features

logger = logging.getLogger(__name__)


class Step(NamedTuple):
    """What the chain knows about one step: its function, what it works on, whether it reshapes.

    ``kind`` is ``"counts"`` (counts -> counts), ``"to_features"`` (counts -> features) or
    ``"features"`` (features -> features). ``changes_shape`` marks counts steps that change the
    map's pixels or channels (binning, cropping): the pipeline runs those first, on the raw cube,
    and takes the cluster spectra from their result.
    """

    func: Callable[..., xr.Dataset]
    kind: Literal["counts", "to_features", "features"]
    changes_shape: bool = False


#: step name -> :class:`Step`; a new step is one function and one line here
STEPS: dict[str, Step] = {
    "bin_spatial": Step(bin_spatial, "counts", changes_shape=True),
    "rebin_energy": Step(rebin_energy, "counts", changes_shape=True),
    "crop_energy": Step(crop_energy, "counts", changes_shape=True),
    "remove_noise_peak": Step(remove_noise_peak, "counts"),
    "normalize_total": Step(normalize_total, "counts"),
    "line_features": Step(line_features, "to_features"),
    "pca_features": Step(pca_features, "to_features"),
    "neighbor_average": Step(neighbor_average, "features"),
    "zscore": Step(zscore, "features"),
    "softmax": Step(softmax, "features"),
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Preprocessor:
    """An ordered chain of preprocessing steps, stored as plain data.

    Parameters
    ----------
    steps : list of dict
        Each dict has ``"name"`` (a key of :data:`STEPS`) and that function's keyword
        arguments. Steps on counts come first, then exactly one of ``line_features`` /
        ``pca_features``, then steps on features.

    Examples
    --------
    >>> steps = [{"name": "line_features", "lines": ["Fe_Ka"]}, {"name": "zscore"}]
    >>> pre = Preprocessor(steps=steps)
    >>> Preprocessor.from_json(pre.to_json()) == pre
    True
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1

    def __post_init__(self) -> None:
        self.steps = [_jsonable(dict(s)) for s in self.steps]
        stage = 0  # 0: counts, 1: features
        n_feat = 0
        for k, step in enumerate(self.steps):
            name = step.get("name")
            if name not in STEPS:
                raise ValueError(
                    f"Preprocessor step {k}: unknown name {name!r}; use one of {sorted(STEPS)}."
                )
            func, kind, _ = STEPS[name]
            params = inspect.signature(func).parameters
            allowed = [p for p in params if p != "ds"]
            unknown = [p for p in step if p != "name" and p not in allowed]
            if unknown:
                raise ValueError(
                    f"Preprocessor step {k} ({name}): unknown parameter(s) {unknown!r}; {name} "
                    f"takes {allowed!r}."
                )
            if kind == "counts" and stage == 1:
                raise ValueError(
                    f"Preprocessor step {k} ({name}) works on counts but comes after the features "
                    "were computed; move it before line_features / pca_features."
                )
            if kind == "features" and stage == 0:
                raise ValueError(
                    f"Preprocessor step {k} ({name}) works on features; put line_features or "
                    "pca_features before it."
                )
            if kind == "to_features":
                n_feat += 1
                stage = 1
        if self.steps and n_feat != 1:
            raise ValueError(
                "Preprocessor needs exactly one feature step (line_features or pca_features); "
                f"got {n_feat}."
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def sigma_default(
        cls, lines: str | Sequence[str] | None = None, bin_factor: int | Sequence[int] | None = None
    ) -> Preprocessor:
        """SIGMA's chain of steps.

        (Binning), zero < 0.1 keV, normalise, line windows +/- 1 FWHM, 3x3 mean, z-score, softmax.

        ``lines=None`` uses the file's ``xray_lines`` (identified automatically when empty).
        """
        steps: list[dict[str, Any]] = []
        if bin_factor is not None:
            steps.append({"name": "bin_spatial", "factor": bin_factor})
        steps += [
            {"name": "remove_noise_peak", "below_kev": 0.1},
            {"name": "normalize_total"},
            {
                "name": "line_features",
                "lines": lines if isinstance(lines, (str, type(None))) else list(lines),
                "width_fwhm": 1.0,
            },
            {"name": "neighbor_average", "kind": "mean3x3"},
            {"name": "zscore"},
            {"name": "softmax"},
        ]
        return cls(steps=steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``{"version": 1, "steps": [...]}``."""
        return {"version": self.version, "steps": copy.deepcopy(self.steps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict` (also accepts a bare list of steps)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            return cls(steps=[dict(s) for s in data])
        if not isinstance(data, Mapping) or "steps" not in data:
            raise ValueError(
                f"Preprocessor.from_dict expects a dict with a 'steps' list. Got {data!r}."
            )
        return cls(steps=[dict(s) for s in data["steps"]], version=int(data.get("version", 1)))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict` (kwargs go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"Preprocessor.from_json: not valid JSON ({err}). Got {text[:80]!r}."
            ) from err
        return cls.from_dict(data)

    # -- application --------------------------------------------------------------------------
    def __call__(self, ds: xr.Dataset) -> xr.Dataset:
        """Apply the chain; see :meth:`apply`."""
        return self.apply(ds)

    def apply(self, ds: xr.Dataset) -> xr.Dataset:
        """Apply the chain to a spectrum image and return the features dataset.

        ``remove_noise_peak`` / ``normalize_total`` steps directly before ``line_features``
        are fused into it (``ignore_below_kev`` / ``normalize``): same numbers, no copy of the
        cube. The result's ``attrs["preprocessing"]`` holds the chain as JSON with
        ``lines="auto"``/``None`` replaced by the lines actually used.
        """
        if not self.steps:
            raise ValueError(
                "Preprocessor has no steps; add at least a line_features or pca_features step."
            )
        _require_counts(ds, "Preprocessor")
        resolved = copy.deepcopy(self.steps)
        out = ds
        k = 0
        while k < len(resolved):
            step = resolved[k]
            name = step["name"]
            func = STEPS[name].func
            if name in ("remove_noise_peak", "normalize_total"):
                j = k
                fused: dict[str, Any] = {}
                while j < len(resolved) and resolved[j]["name"] in (
                    "remove_noise_peak",
                    "normalize_total",
                ):
                    s = resolved[j]
                    if s["name"] == "remove_noise_peak":
                        if fused.get("normalize"):
                            break  # zeroing after normalising changes the totals: no fusion
                        below = s.get("below_kev", 0.1)
                        fused["ignore_below_kev"] = max(
                            below, fused.get("ignore_below_kev", -np.inf)
                        )
                    else:
                        fused["normalize"] = True
                    j += 1
                if j < len(resolved) and resolved[j]["name"] == "line_features" and j > k:
                    lf = resolved[j]
                    if not lf.get("normalize") and lf.get("ignore_below_kev") is None:
                        kwargs = {p: v for p, v in lf.items() if p != "name"} | fused
                        out = line_features(out, **kwargs)
                        lf["lines"] = as_str_list(
                            out.attrs.get("feature_lines") or out.attrs.get("xray_lines")
                        )
                        k = j + 1
                        continue
            kwargs = {p: v for p, v in step.items() if p != "name"}
            if name == "bin_spatial" and isinstance(kwargs.get("factor"), list):
                kwargs["factor"] = tuple(kwargs["factor"])
            out = func(out, **kwargs)
            if name == "line_features":
                step["lines"] = as_str_list(
                    out.attrs.get("feature_lines") or out.attrs.get("xray_lines")
                )
            k += 1
        out.attrs["preprocessing"] = json.dumps(
            {"version": self.version, "steps": _jsonable(resolved)}
        )
        return out
