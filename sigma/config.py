"""Check a pipeline config (``sigma run --config``, ``sigma.run(config=...)``) before any work.

:func:`check_config` checks every key of :class:`sigma.pipeline.PipelineConfig` by type and range,
and the keys inside ``model:``, ``trainer:`` and ``clustering:`` by name (and the common ones by
type), so a typo or a wrong type fails in the first second rather than after training.
:func:`read_yaml` turns a malformed YAML file into one clear :class:`ConfigurationError`.

A later refactor can turn these checks into typed dataclasses; the messages stay the same.

Examples
--------
>>> check_config({"max_epochs": 4, "clustering": {"n_components": 3}})
>>> check_config({"max_epochs": "many"})
Traceback (most recent call last):
...
sigma.exceptions.ConfigurationError: config key 'max_epochs' must be an int in the range [1, inf). Got 'many' instead.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sigma.exceptions import ConfigurationError

__all__ = ["check_config", "read_yaml", "MODEL_KEYS", "TRAINER_KEYS", "clustering_keys"]

#: keyword arguments of :class:`sigma.model.AutoEncoder` a config may set (``n_features`` comes
#: from the data); kept in sync with the class by tests/test_config.py
MODEL_KEYS = (
    "hidden_dims",
    "latent_dim",
    "output_activation",
    "negative_slope",
    "lr",
    "weight_decay",
    "lr_factor",
    "lr_patience",
    "lr_threshold",
    "min_lr",
    "monitor",
    "input_noise",
    "variational",
    "kl_weight",
)
#: keyword arguments of :class:`lightning.pytorch.Trainer` (listed so that checking a config does
#: not import Lightning); kept in sync with the installed Lightning by tests/test_config.py
TRAINER_KEYS = (
    "accelerator",
    "strategy",
    "devices",
    "num_nodes",
    "precision",
    "logger",
    "callbacks",
    "fast_dev_run",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "deterministic",
    "benchmark",
    "inference_mode",
    "use_distributed_sampler",
    "profiler",
    "detect_anomaly",
    "barebones",
    "plugins",
    "sync_batchnorm",
    "reload_dataloaders_every_n_epochs",
    "default_root_dir",
    "enable_autolog_hparams",
    "model_registry",
)
#: accelerators Lightning knows by name
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@functools.cache
def clustering_keys() -> tuple[str, ...]:
    """Keyword arguments of :func:`sigma.clustering.cluster` a config may set.

    Read from the module's source (``ast``) when it is not imported yet: importing it (scikit-
    learn, numba) takes ~1.7 s, which a config check before loading should not cost.
    """
    import sys

    skip = ("latent", "features", "valid")  # (the pipeline passes these itself)
    if "sigma.clustering" not in sys.modules:
        import ast
        import importlib.util

        spec = importlib.util.find_spec("sigma.clustering")
        if spec is not None and spec.origin:
            # cluster() is defined in sigma/clustering/core.py
            core = Path(spec.origin).with_name("core.py")
            tree = ast.parse(core.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == "cluster":
                    args = [*node.args.args, *node.args.kwonlyargs]
                    return tuple(a.arg for a in args if a.arg not in skip)
    from sigma.clustering import cluster

    params = inspect.signature(cluster).parameters
    return tuple(n for n in params if n not in skip)


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _int(where: str, value: Any, low: int, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or null" if none_ok else ""
        raise ConfigurationError(
            f"{where} must be an int in the range [{low}, inf){extra}. Got {value!r} instead."
        )


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
    """Check a pipeline config (a dict of :class:`~sigma.pipeline.PipelineConfig` keys, or one).

    Raises
    ------
    ConfigurationError
        Naming the first bad key, the value received and what is allowed.
    """
    import dataclasses

    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"a pipeline config must be a mapping of keys. Got {type(data).__name__}."
        )
    from sigma.pipeline import PipelineConfig

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
