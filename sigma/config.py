"""The pipeline's config: typed sections, :class:`PipelineConfig`, and one clear error per bad key.

:class:`PipelineConfig` holds every choice of :func:`sigma.run` (``sigma run``, ``sigma demo``)
as plain data; its nested sections are typed dataclasses: :class:`ModelConfig` (the
autoencoder), :class:`TrainerConfig` (Lightning's Trainer) and :class:`ClusteringConfig`
(:func:`sigma.clustering.cluster`). A YAML file or a dict of dicts converts to them, missing keys
taking the defaults. The same classes give ``sigma run`` its options (``--config FILE``,
``--clustering.n_components 5``, help from the docstrings; :mod:`sigma.commands.run`).

:func:`check_config` checks every key by name, type and range, so a typo or a wrong type fails
in the first second rather than after training, naming the key and suggesting the close one.
:func:`read_yaml` turns a malformed YAML file into one clear :class:`ConfigurationError`.
Nothing here imports numpy, xarray or torch: building ``sigma run``'s parser stays fast.

Examples
--------
>>> check_config({"max_epochs": 4, "clustering": {"n_components": 3}})
>>> check_config({"max_epochs": "many"})
Traceback (most recent call last):
...
sigma.exceptions.ConfigurationError: config key 'max_epochs' must be an int in the range [1, inf). Got 'many' instead.
>>> PipelineConfig(clustering={"n_components": 3}).clustering.method
'gmm'
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from sigma._checks import check_int
from sigma.exceptions import ConfigurationError

__all__ = [
    "PipelineConfig",
    "ModelConfig",
    "TrainerConfig",
    "ClusteringConfig",
    "check_config",
    "read_yaml",
    "MODEL_KEYS",
    "TRAINER_KEYS",
    "clustering_keys",
]

_S = TypeVar("_S")

#: accelerators Lightning knows by name
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def clustering_keys() -> tuple[str, ...]:
    """Keyword arguments of :func:`sigma.clustering.cluster` a config may set.

    The fields of :class:`ClusteringConfig` (kept in sync with ``cluster`` by
    tests/test_config.py); reading them imports nothing.
    """
    return tuple(f.name for f in fields(ClusteringConfig))


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


#: the int check with the config's error and YAML's spelling of None
_int = functools.partial(check_int, error=ConfigurationError, none_text="null")


def _float(
    where: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = v == v and (v > low if open_low else v >= low) and (high is None or v <= high)
    if not ok:
        lo = "(" if open_low else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise ConfigurationError(
            f"{where} must be a number in the range {lo}{low}, {hi}. Got {value!r} instead."
        )


def _check_keys(section: str, data: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = _plain(data)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"config key {section!r} must be a mapping of keys (e.g. {section}: {{...}}). Got "
            f"{data!r}."
        )
    for key in data:
        if key not in known:
            hint = _suggest(str(key), known) or f" The known keys are {sorted(known)!r}."
            raise ConfigurationError(f"unknown key {key!r} inside {section!r}.{hint}")
    return dict(data)


def check_config(data: Mapping[str, Any] | Any) -> None:
    """Check a pipeline config (a dict of :class:`PipelineConfig` keys, or one).

    Raises
    ------
    ConfigurationError
        Naming the first bad key, the value received and what is allowed.
    """
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = _plain(data)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"a pipeline config must be a mapping of keys. Got {type(data).__name__}."
        )
    known = tuple(f.name for f in dataclasses.fields(PipelineConfig))
    for key in data:
        if key not in known:
            hint = _suggest(str(key), known) or f" The known keys are {sorted(known)!r}."
            raise ConfigurationError(f"unknown pipeline config key {key!r}.{hint}")
    d = dict(data)
    _check_top(d)
    if "model" in d:
        model = _check_keys("model", d["model"], MODEL_KEYS)
        for key in ("latent_dim", "lr_patience"):
            if key in model:
                _int(f"model.{key}", model[key], 1 if key == "latent_dim" else 0)
        for key in ("lr", "min_lr", "weight_decay", "input_noise", "kl_weight", "negative_slope"):
            if key in model:
                _float(f"model.{key}", model[key], 0.0, open_low=key == "lr")
        if "hidden_dims" in model:
            dims = model["hidden_dims"]
            if not isinstance(dims, (list, tuple)) or not dims:
                raise ConfigurationError(
                    f"model.hidden_dims must be a non-empty list of layer widths, e.g. "
                    f"[256, 128, 64]. Got {dims!r} instead."
                )
            for i, h in enumerate(dims):
                _int(f"model.hidden_dims[{i}]", h, 1)
    if "trainer" in d:
        trainer = _check_keys("trainer", d["trainer"], TRAINER_KEYS)
        if "max_epochs" in trainer:
            _int("trainer.max_epochs", trainer["max_epochs"], 1)
        if "accelerator" in trainer:
            check_accelerator(trainer["accelerator"], where="trainer.accelerator")
        if "devices" in trainer:
            check_devices(trainer["devices"], where="trainer.devices")
        if "num_nodes" in trainer:
            _int("trainer.num_nodes", trainer["num_nodes"], 1)
    if "clustering" in d:
        clustering = _check_keys("clustering", d["clustering"], clustering_keys())
        if "n_components" in clustering:
            check_n_components(clustering["n_components"], where="clustering.n_components")
        from sigma.clustering.registry import method_names

        methods = method_names()
        if "method" in clustering and clustering["method"] not in methods:
            raise ConfigurationError(
                f"clustering.method must be one of {list(methods)!r}. Got "
                f"{clustering['method']!r} instead."
            )
        for key in ("n_init", "k_max", "min_cluster_size"):
            if key in clustering:
                _int(f"clustering.{key}", clustering[key], 1)


def _check_top(d: dict[str, Any]) -> None:
    if "bin_factor" in d and d["bin_factor"] is not None:
        b = d["bin_factor"]
        if isinstance(b, (list, tuple)):
            for i, v in enumerate(b):
                _int(f"config key 'bin_factor[{i}]'", v, 1)
        else:
            _int("config key 'bin_factor'", b, 1, none_ok=True)
    if "lines" in d and d["lines"] is not None:
        lines = d["lines"]
        if not (
            lines == "auto" or (isinstance(lines, list) and all(isinstance(s, str) for s in lines))
        ):
            raise ConfigurationError(
                "config key 'lines' must be 'auto', null or a list of X-ray lines like "
                f"['Fe_Ka', 'Si_Ka']. Got {lines!r} instead."
            )
        if isinstance(lines, list):  # names checked now, not after the file is read
            from sigma.exceptions import XrayLineError
            from sigma.preprocessing.lines import parse_line_spec

            for name in lines:  # elements (any case) or lines, by the run's own rules
                try:
                    parse_line_spec([name])
                except XrayLineError as err:
                    raise ConfigurationError(
                        f"config key 'lines' (--lines): {err} Fix or remove it, or use 'auto'."
                    ) from err
    if (
        "preprocessing" in d
        and d["preprocessing"] is not None
        and not isinstance(d["preprocessing"], Mapping)
    ):
        raise ConfigurationError(
            "config key 'preprocessing' must be null or a mapping (a Preprocessor dict). Got "
            f"{d['preprocessing']!r} instead."
        )
    for key, low in (("batch_size", 1), ("max_epochs", 1), ("early_stopping_patience", 0)):
        if key in d:
            _int(f"config key {key!r}", d[key], low)
    if "seed" in d:
        _int("config key 'seed'", d["seed"], 0)
    if "nmf_components" in d:
        _int("config key 'nmf_components'", d["nmf_components"], 1, none_ok=True)
    if "val_fraction" in d:
        _float("config key 'val_fraction'", d["val_fraction"], 0.0, 0.9)
    if "smooth_labels" in d:
        _float("config key 'smooth_labels'", d["smooth_labels"], 0.0)
    if "keep_counts_mb" in d:
        _float("config key 'keep_counts_mb'", d["keep_counts_mb"], 0.0)
    if "neighbor_average" in d and d["neighbor_average"] not in ("auto", True, False):
        raise ConfigurationError(
            "config key 'neighbor_average' must be 'auto', true or false. Got "
            f"{d['neighbor_average']!r} instead."
        )
    if "spatial" in d:
        sp = d["spatial"]
        if not (
            sp in ("auto", True, False)
            or (isinstance(sp, (int, float)) and not isinstance(sp, bool) and 0 <= sp < 100)
        ):
            raise ConfigurationError(
                "config key 'spatial' must be 'auto', false, or a Potts strength in nats per "
                f"neighbour in the range [0, 100). Got {sp!r} instead."
            )
    if "find_missed" in d and not isinstance(d["find_missed"], bool):
        raise ConfigurationError(
            f"config key 'find_missed' must be true or false. Got {d['find_missed']!r} instead."
        )
    if "refine" in d and d["refine"] not in ("pca", "features", "none"):
        raise ConfigurationError(
            f"config key 'refine' must be 'pca', 'features' or 'none'. Got {d['refine']!r} instead."
        )


def check_n_components(value: Any, *, where: str = "n_components") -> None:
    """``"auto"`` or an int >= 1 (the number of phases)."""
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{where} must be 'auto' or an int in the range [1, inf). Got {value!r} instead."
        )


def check_accelerator(value: Any, *, where: str = "accelerator") -> None:
    """One of Lightning's accelerator names."""
    if not isinstance(value, str) or value.lower() not in ACCELERATORS:
        raise ConfigurationError(
            f"{where} must be one of {list(ACCELERATORS)!r}. Got {value!r} instead."
        )


def check_devices(value: Any, *, where: str = "devices") -> None:
    """Lightning's devices: an int >= 1 (or -1 for all), ``"auto"``, or a list of device ids."""
    if value in ("auto", -1, "-1"):
        return
    if isinstance(value, str):
        text = value.strip().rstrip(",")
        if text.isdigit() and int(text) >= 1:
            return
        parts = [p.strip() for p in text.split(",")]
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            return
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    elif (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return
    raise ConfigurationError(
        f"{where} must be 'auto', a number of devices >= 1, -1 (all) or a list of device ids "
        f"like 0,1. Got {value!r} instead."
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict; malformed YAML is a :class:`ConfigurationError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pipeline config {str(path)!r} does not exist"
            + (" (it is a folder)" if path.is_dir() else "")
            + ". Check the path given to --config."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigurationError(
            f"pipeline config {str(path)!r} is not a text (UTF-8) file. Give a YAML file such as "
            "configs/run_demo.yaml."
        ) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigurationError(
            f"pipeline config {str(path)!r} is not valid YAML{at}: {problem}. Fix the file (see "
            "configs/run_demo.yaml for the layout)."
        ) from err
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"pipeline config {str(path)!r} must hold a mapping of keys, got "
            f"{type(data).__name__}. See configs/run_demo.yaml for the layout."
        )
    return data


# ----------------------------------------------------------------------------- typed sections


def _section_from(cls: type[_S], name: str, data: Any) -> _S:
    """``data`` (a mapping, an instance or None) as a ``cls`` instance, checked like the YAML."""
    if isinstance(data, cls):
        return data
    if data is None:
        return cls()
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = _plain(data)
    check_config({name: data})  # names, types and ranges: the messages of a YAML file
    return cls(**dict(data))


def _plain(section: Any) -> dict[str, Any]:
    to_dict = getattr(section, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dataclasses.asdict(section)


@dataclass
class ModelConfig:
    """The autoencoder: keyword arguments of :class:`sigma.model.AutoEncoder`.

    ``n_features`` comes from the data. The defaults are the pipeline's: ``lr``,
    ``output_activation`` and ``hidden_dims`` differ from the class's (SIGMA's) own.

    Parameters
    ----------
    hidden_dims : list of int
        Widths of the encoder's hidden layers; the decoder mirrors them (SIGMA: 512, 256, 128).
    latent_dim : int
        Size of the latent space; 2 for the usual scatter-plot/GMM workflow.
    output_activation : {"softmax", "sigmoid", "identity"}
        Decoder output matched to the features: identity for z-scored, softmax for softmax ones.
    negative_slope : float
        LeakyReLU slope for negative inputs.
    lr : float
        Adam learning rate (SIGMA's: 1e-4).
    weight_decay : float
        Adam's L2 penalty.
    lr_factor : float
        Factor applied to the learning rate when the monitored loss stalls (ReduceLROnPlateau).
    lr_patience : int
        Epochs without improvement before the learning rate is reduced.
    lr_threshold : float
        Relative improvement the scheduler counts as one (1e-2 = 1 %).
    min_lr : float
        Smallest learning rate the scheduler goes down to.
    monitor : str
        Logged metric the scheduler watches ("val/loss", or "train/loss" without validation).
    input_noise : float
        Standard deviation of Gaussian noise added to the inputs in training (0: none).
    variational : bool
        Train a variational autoencoder (the latent is the encoder's mean).
    kl_weight : float
        Weight of the KL term relative to the MSE; only with ``variational``.
    """

    hidden_dims: list[int] = field(default_factory=lambda: [256, 128, 64])
    latent_dim: int = 2
    output_activation: Literal["softmax", "sigmoid", "identity"] = "identity"
    negative_slope: float = 0.02
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = 5
    lr_threshold: float = 1e-2
    min_lr: float = 1e-7
    monitor: str = "val/loss"
    input_noise: float = 0.0
    variational: bool = False
    kl_weight: float = 1e-3

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelConfig:
        """From a (partial) mapping: missing keys take the defaults, unknown ones are an error."""
        return _section_from(cls, "model", data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (JSON-able): the keyword arguments of the AutoEncoder."""
        return dataclasses.asdict(self)


@dataclass
class ClusteringConfig:
    """The clustering: keyword arguments of :func:`sigma.clustering.cluster`.

    The pipeline passes the latent, the refinement features and the valid pixels itself.

    Parameters
    ----------
    method : str
        Clustering method, a name in :data:`sigma.clustering.registry.METHODS` (gmm, bgmm ...).
    n_components : "auto" or int
        Number of phases; "auto" finds it from the data.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Gaussian covariance, as in scikit-learn's GaussianMixture.
    n_init : int
        Initialisations per mixture fit (best kept).
    k_max : int
        Largest number of Gaussians (and phases) tried.
    random_state : int or None
        Seed of the clustering; None (default) takes the pipeline's ``seed``.
    standardize : bool
        Scale each latent dim to zero mean, unit variance before fitting.
    n_fit : int or None
        Fit on a random subsample of this many points (None: all).
    overlap_threshold : float
        Gaussians whose responsibility overlap reaches this value belong to the same phase.
    min_cluster_size : int
        HDBSCAN's smallest cluster (on the fitted subsample).
    n_jobs : int or None
        Parallel fits of the BIC sweep (joblib); does not change the result.
    criterion : {"density_peaks", "bic_overlap"}
        How "auto" finds the phases in the latent.
    adjust_k : bool
        With refinement: drop clusters of mixed boundary pixels and merge phases the latent split.
    """

    method: str = "gmm"
    n_components: int | Literal["auto"] = "auto"
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "full"
    n_init: int = 2
    k_max: int = 16
    random_state: int | None = None
    standardize: bool = True
    n_fit: int | None = 20_000
    overlap_threshold: float = 0.02
    min_cluster_size: int = 50
    n_jobs: int | None = None
    criterion: Literal["density_peaks", "bic_overlap"] = "density_peaks"
    adjust_k: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ClusteringConfig:
        """From a (partial) mapping: missing keys take the defaults, unknown ones are an error."""
        return _section_from(cls, "clustering", data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (JSON-able)."""
        return dataclasses.asdict(self)

    def kwargs(self, seed: int | None) -> dict[str, Any]:
        """Keyword arguments of :func:`sigma.clustering.cluster`; ``random_state`` None -> ``seed``."""
        kw = self.to_dict()
        if kw["random_state"] is None:
            kw["random_state"] = seed
        return kw


@dataclass(repr=False)
class TrainerConfig:
    """Options of :class:`lightning.pytorch.Trainer`; only those set (not None) are passed.

    The pipeline sets ``max_epochs``, early stopping and quiet output itself; an option set
    here replaces its choice. Unset options keep Lightning's defaults.

    Parameters
    ----------
    accelerator : str or None
        Hardware: "auto", "cpu", "gpu", "cuda", "mps" or "tpu".
    strategy : str or None
        Distribution strategy, e.g. "auto", "ddp", "ddp_spawn".
    devices : int, str, list of int or None
        Devices to use: a count, -1 (all), "auto", or ids like [0, 1] or "0,1".
    num_nodes : int or None
        Machines for distributed training.
    precision : int, str or None
        Floating-point precision, e.g. 32, "16-mixed", "bf16-mixed".
    logger : bool or None
        Lightning's logger (the pipeline turns it off).
    callbacks : Any
        Lightning callbacks (Python objects; replace the pipeline's early stopping).
    fast_dev_run : bool, int or None
        Run this many batches only, to test the code.
    max_epochs : int or None
        Maximum epochs (overrides the pipeline's ``max_epochs``).
    min_epochs : int or None
        Minimum epochs before early stopping may stop training.
    max_steps : int or None
        Maximum optimiser steps (-1: no limit).
    min_steps : int or None
        Minimum optimiser steps.
    max_time : str, dict or None
        Wall-clock limit of the training, "DD:HH:MM:SS" or {hours: 1}.
    limit_train_batches : int, float or None
        Training batches per epoch (a fraction or a count).
    limit_val_batches : int, float or None
        Validation batches per epoch (a fraction or a count).
    limit_test_batches : int, float or None
        Test batches (a fraction or a count).
    limit_predict_batches : int, float or None
        Prediction batches (a fraction or a count).
    overfit_batches : int, float or None
        Train and validate on this many batches only (debugging).
    val_check_interval : int, float, str or None
        How often within an epoch to validate.
    check_val_every_n_epoch : int or None
        Validate every n epochs.
    num_sanity_val_steps : int or None
        Validation batches run before training.
    log_every_n_steps : int or None
        Logging interval in steps.
    enable_checkpointing : bool or None
        Save checkpoints (the pipeline turns it off).
    enable_progress_bar : bool or None
        Show the progress bar (the pipeline follows ``--quiet``).
    enable_model_summary : bool or None
        Print the model summary (the pipeline turns it off).
    accumulate_grad_batches : int or None
        Accumulate gradients over this many batches.
    gradient_clip_val : int, float or None
        Clip gradients at this value.
    gradient_clip_algorithm : str or None
        "value" or "norm".
    deterministic : bool, str or None
        Deterministic algorithms only (true, false or "warn").
    benchmark : bool or None
        cudnn.benchmark.
    inference_mode : bool or None
        torch.inference_mode instead of no_grad for evaluation.
    use_distributed_sampler : bool or None
        Wrap the dataloaders' samplers for distributed training.
    profiler : str or None
        Profiler name, e.g. "simple".
    detect_anomaly : bool or None
        torch.autograd anomaly detection.
    barebones : bool or None
        Turn off every feature that may slow training (debugging).
    plugins : Any
        Lightning plugins (Python objects).
    sync_batchnorm : bool or None
        Synchronise batch norm across processes.
    reload_dataloaders_every_n_epochs : int or None
        Reload the dataloaders every n epochs.
    default_root_dir : str or None
        Folder for Lightning's logs and checkpoints.
    enable_autolog_hparams : bool or None
        Log the hyperparameters with the logger.
    model_registry : str or None
        Name of the model in Lightning's model registry.
    """

    accelerator: str | None = None
    strategy: str | None = None
    devices: int | str | list[int] | None = None
    num_nodes: int | None = None
    precision: int | str | None = None
    logger: bool | None = None
    callbacks: Any = None
    fast_dev_run: bool | int | None = None
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int | None = None
    min_steps: int | None = None
    max_time: str | dict[str, int] | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float | None = None
    val_check_interval: int | float | str | None = None
    check_val_every_n_epoch: int | None = None
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int | None = None
    gradient_clip_val: int | float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: bool | Literal["warn"] | None = None
    benchmark: bool | None = None
    inference_mode: bool | None = None
    use_distributed_sampler: bool | None = None
    profiler: str | None = None
    detect_anomaly: bool | None = None
    barebones: bool | None = None
    plugins: Any = None
    sync_batchnorm: bool | None = None
    reload_dataloaders_every_n_epochs: int | None = None
    default_root_dir: str | None = None
    enable_autolog_hparams: bool | None = None
    model_registry: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainerConfig:
        """From a mapping of the options to set; unknown keys are an error."""
        return _section_from(cls, "trainer", data)

    def __repr__(self) -> str:
        """Only the options set: ``TrainerConfig(accelerator='gpu', devices=2)``."""
        return f"TrainerConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def to_dict(self) -> dict[str, Any]:
        """The options set (not None): what is passed to the Trainer and stored in results."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


#: the typed sections of a :class:`PipelineConfig`
_SECTIONS: dict[str, Any] = {
    "model": ModelConfig,
    "trainer": TrainerConfig,
    "clustering": ClusteringConfig,
}


@dataclass
class PipelineConfig:
    """Every choice of a :func:`sigma.run`, as plain data (stored in the results).

    Why the defaults are what they are (the demo-scene measurements): ``docs/config.md``.

    Parameters
    ----------
    bin_factor : int, list of int or None
        Spatial binning (summing counts) before anything else; None keeps full resolution.
    lines : "auto", list of str or None
        X-ray lines for the features (``["Fe_Ka", "Si_Ka"]``); None: the file's list, identified
        automatically when the file has none; ``"auto"``: always identified.
    preprocessing : dict or None
        A full :class:`sigma.preprocessing.Preprocessor` dict, replacing the default chain
        (:func:`sigma.pipeline.default_steps`: line fractions, 3x3 mean, z-score), ``bin_factor``
        and ``lines``.
    model : ModelConfig
        The autoencoder (:class:`ModelConfig`); a dict of some of its keys keeps the defaults.
    batch_size : int
        Training batch size (:class:`sigma.datamodule.SpectralDataModule`).
    val_fraction : float
        Fraction of the pixels held out for validation (early stopping).
    max_epochs : int
        Upper bound on training epochs.
    early_stopping_patience : int
        Epochs without validation improvement before training stops.
    trainer : TrainerConfig
        Lightning Trainer options (:class:`TrainerConfig`); only those set are passed.
    clustering : ClusteringConfig
        The clustering (:class:`ClusteringConfig`); a dict of some of its keys keeps the defaults.
    neighbor_average : "auto" or bool
        3x3 mean of the features in the default chain; ``"auto"``: only when the (binned) pixels
        hold fewer than ``sigma.pipeline.SPARSE_COUNTS`` counts on average.
    refine : {"pca", "features", "none"}
        Reassign the pixels in a richer space than the 2-D latent
        (:func:`sigma.clustering.refine_in_features`; the number of phases still comes from the
        latent): 8 Poisson-scaled principal components of the spectra, the autoencoder's input
        features, or none. Cubes not in memory use ``"features"``; HDBSCAN is not refined.
    spatial : "auto", float or False
        Reassign every pixel from its Poisson likelihood under each phase and a Potts prior on its
        8 neighbours (:mod:`sigma.clustering.spatial`): ``"auto"`` takes the prior's strength
        from the data, a number fixes it (nats per agreeing neighbour), false turns it off.
    find_missed : bool
        Search the counts for phases the clusters missed (:mod:`sigma.clustering.residual`);
        only with ``spatial`` on.
    smooth_labels : float
        Gaussian sigma (pixels) over which cluster probabilities are averaged before taking the
        label; 0 turns it off.
    nmf_components : int or None
        NMF components for unmixing the cluster spectra; None uses the number of clusters.
    seed : int
        Seed for everything random (split, weights, clustering).
    library : str
        Name the phases from a library (:mod:`sigma.phases`): ``"default"``, a CSV path (name,
        formula[, density]) that extends it, or ``"none"`` to keep the line-based names.
    embedding : {"autoencoder", "umap"}
        The 2-D embedding clustered: sigma's autoencoder, or UMAP (needs ``umap-learn``).
    keep_counts_mb : float
        Keep the (binned) per-pixel counts in the results, sparse, when they fit this many MiB
        (:mod:`sigma.sparse_counts`), for exact GUI spectra; 0: never (the results then refer
        to the input file).
    """

    bin_factor: int | list[int] | None = None
    lines: str | list[str] | None = None
    preprocessing: dict[str, Any] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 512
    val_fraction: float = 0.1
    max_epochs: int = 4
    early_stopping_patience: int = 2
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    neighbor_average: bool | Literal["auto"] = "auto"
    refine: Literal["pca", "features", "none"] = "pca"
    spatial: bool | float | Literal["auto"] = "auto"
    find_missed: bool = True
    smooth_labels: float = 0.0
    nmf_components: int | None = None
    seed: int = 0
    library: str = "default"
    embedding: Literal["autoencoder", "umap"] = "autoencoder"
    keep_counts_mb: float = 128.0

    def __setattr__(self, name: str, value: Any) -> None:
        """A dict (or None) given for ``model``, ``trainer`` or ``clustering`` becomes its section."""
        section = _SECTIONS.get(name)
        if section is not None and not isinstance(value, section):
            value = section.from_dict(value)
        object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PipelineConfig:
        """Build from a dict (e.g. parsed YAML); unknown keys are an error that names the close one."""
        data = dict(data or {})
        check_config(data)  # types, ranges and nested keys, before any work
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML file holding the keys of this class (see ``configs/run_*.yaml``)."""
        return cls.from_dict(read_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (JSON-able; stored in the results); ``trainer`` holds only the options set."""
        import copy

        return {
            f.name: _plain(value) if f.name in _SECTIONS else copy.deepcopy(value)
            for f in fields(self)
            for value in (getattr(self, f.name),)
        }

    def preprocessor(self, mean_counts: float | None = None) -> Any:
        """The :class:`sigma.preprocessing.Preprocessor` this config asks for.

        ``mean_counts`` (counts per pixel after binning) decides ``neighbor_average="auto"``;
        None counts as sparse.
        """
        from sigma.pipeline import SPARSE_COUNTS, default_steps
        from sigma.preprocessing import Preprocessor

        if self.preprocessing is not None:
            return Preprocessor.from_dict(self.preprocessing)
        if self.neighbor_average == "auto":
            average = mean_counts is None or mean_counts < SPARSE_COUNTS
        elif isinstance(self.neighbor_average, bool):
            average = self.neighbor_average
        else:
            raise ConfigurationError(
                f"neighbor_average must be 'auto', true or false. Got {self.neighbor_average!r}."
            )
        return Preprocessor(
            steps=default_steps(
                lines=self.lines, bin_factor=self.bin_factor, neighbor_average=average
            )
        )


#: keyword arguments of :class:`sigma.model.AutoEncoder` a config may set (``n_features`` comes
#: from the data); kept in sync with the class by tests/test_config.py
MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))
#: keyword arguments of :class:`lightning.pytorch.Trainer` (listed so that checking a config does
#: not import Lightning); kept in sync with the installed Lightning by tests/test_config.py
TRAINER_KEYS = tuple(f.name for f in fields(TrainerConfig))
