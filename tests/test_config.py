"""Config checks (sigma/config.py), output-path checks and command output settings."""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import pytest

from sigma.config import (
    MODEL_KEYS,
    TRAINER_KEYS,
    ClusteringConfig,
    ModelConfig,
    PipelineConfig,
    TrainerConfig,
    check_config,
    clustering_keys,
)
from sigma.exceptions import ConfigurationError, OutputPathError

#: where the pipeline's defaults differ from the AutoEncoder's (SIGMA's) own
PIPELINE_MODEL_DEFAULTS = {
    "lr": 1e-3,
    "output_activation": "identity",
    "hidden_dims": [256, 128, 64],
}


def _defaults(func: object, skip: tuple[str, ...]) -> dict[str, object]:
    params = inspect.signature(func).parameters  # type: ignore[arg-type]
    return {n: p.default for n, p in params.items() if n not in skip}


def test_model_config_follows_the_autoencoder() -> None:
    from sigma.model import AutoEncoder

    signature = _defaults(AutoEncoder.__init__, ("self", "n_features"))
    config = ModelConfig().to_dict()
    assert tuple(config) == tuple(signature) == MODEL_KEYS
    for name, default in signature.items():
        expected = PIPELINE_MODEL_DEFAULTS.get(name, default)
        assert config[name] == (list(expected) if isinstance(expected, tuple) else expected), name


def test_trainer_keys_match_the_installed_lightning() -> None:
    import lightning.pytorch as pl

    params = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    assert set(TRAINER_KEYS) == params


def test_clustering_config_follows_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sigma.clustering import cluster

    signature = _defaults(cluster, ("latent", "features", "valid"))
    config = ClusteringConfig().to_dict()
    assert tuple(config) == tuple(signature) == clustering_keys()
    for name, default in signature.items():
        # random_state None: the pipeline's seed (ClusteringConfig.kwargs)
        assert config[name] == (None if name == "random_state" else default), name
    assert ClusteringConfig().kwargs(seed=7)["random_state"] == 7
    assert ClusteringConfig(random_state=3).kwargs(seed=7)["random_state"] == 3
    monkeypatch.delitem(sys.modules, "sigma.clustering")  # reading the keys imports nothing
    assert clustering_keys() == tuple(signature)
    assert "sigma.clustering" not in sys.modules


def test_partial_sections_take_the_defaults_and_unknown_keys_are_named() -> None:
    cfg = PipelineConfig(clustering={"n_components": 3}, model={"latent_dim": 3})
    assert cfg.clustering == ClusteringConfig(n_components=3)
    assert (cfg.model.latent_dim, cfg.model.lr, cfg.model.hidden_dims) == (3, 1e-3, [256, 128, 64])
    cfg.trainer = {"devices": 2}  # assigning a dict converts it too
    assert cfg.trainer == TrainerConfig(devices=2)
    with pytest.raises(
        ConfigurationError, match="'n_compnents' inside 'clustering'.*'n_components'"
    ):
        PipelineConfig(clustering={"n_compnents": 3})
    with pytest.raises(ConfigurationError, match="'latent_dimm' inside 'model'"):
        PipelineConfig.from_dict({"model": {"latent_dimm": 3}})
    with pytest.raises(ConfigurationError, match="model.lr must be a number"):
        PipelineConfig(model={"lr": "fast"})


def test_trainer_passes_only_the_options_set() -> None:
    trainer = TrainerConfig.from_dict({"accelerator": "cpu", "gradient_clip_val": 0.5})
    assert trainer.to_dict() == {"accelerator": "cpu", "gradient_clip_val": 0.5}
    assert TrainerConfig().to_dict() == {}
    assert repr(trainer) == "TrainerConfig(accelerator='cpu', gradient_clip_val=0.5)"


def test_to_dict_is_json_and_round_trips() -> None:
    import json

    cfg = PipelineConfig(trainer={"devices": [0, 1]}, clustering={"method": "kmeans"})
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["trainer"] == {"devices": [0, 1]}
    assert data["clustering"]["method"] == "kmeans"
    assert data["model"]["hidden_dims"] == [256, 128, 64]
    assert PipelineConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"batch_size": 0}, r"'batch_size' must be an int in the range \[1, inf\). Got 0"),
        ({"val_fraction": 1.5}, r"'val_fraction' must be a number in the range \[0.0, 0.9\]"),
        ({"seed": "zero"}, "'seed' must be an int"),
        ({"lines": "Fe_Ka"}, "'lines' must be 'auto', null or a list"),
        ({"model": {"hidden_dims": []}}, "model.hidden_dims must be a non-empty list"),
        ({"model": {"hidden_dims": [8, 0]}}, r"model.hidden_dims\[1\]"),
        ({"model": "big"}, "'model' must be a mapping"),
        ({"trainer": {"devices": "many"}}, "trainer.devices"),
        ({"clustering": {"n_components": True}}, "clustering.n_components"),
        ({"neighbor_average": "yes"}, "'neighbor_average' must be 'auto', true or false"),
        ({"refine": "umap"}, "'refine' must be 'pca', 'features' or 'none'"),
    ],
)
def test_check_config_names_the_key_and_value(config: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        check_config(config)


def test_good_configs_pass(tmp_path: Path) -> None:
    from sigma.pipeline import PipelineConfig

    root = Path(__file__).parents[1]
    cfg = PipelineConfig.from_yaml(root / "configs" / "run_demo.yaml")
    check_config(cfg)
    check_config({"bin_factor": [2, 4], "trainer": {"devices": [0, 1]}, "lines": "auto"})


def test_read_only_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigma.validation import check_output_path

    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    # root may write anywhere, so a chmod cannot test this; the check relies on os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
    )
    with pytest.raises(OutputPathError, match="is not writable"):
        check_output_path(folder / "r.nc")
    # a folder that does not exist yet is checked at its first existing parent
    assert check_output_path(tmp_path / "new" / "deeper" / "r.zarr").name == "r.zarr"
    (tmp_path / "r.zarr").write_bytes(b"a file where a store would go")
    with pytest.raises(OutputPathError, match="exists as a file"):
        check_output_path(tmp_path / "r.zarr", overwrite=True)


def test_quiet_hides_info_lines() -> None:
    from sigma.commands._errors import configure_output

    root = logging.getLogger()
    names = ("", "lightning", "lightning.pytorch", "lightning.fabric", "distributed")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        configure_output(quiet=True)
        assert root.level == logging.WARNING
        assert not logging.getLogger("sigma.pipeline").isEnabledFor(logging.INFO)
        assert not logging.getLogger("lightning.pytorch").isEnabledFor(logging.INFO)
        configure_output()
        assert logging.getLogger("sigma.pipeline").isEnabledFor(logging.INFO)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_lines_take_elements_in_any_case_and_lines() -> None:
    """The config check accepts what the run accepts (README: --lines Fe,Si), refuses the rest."""
    from sigma.config import PipelineConfig
    from sigma.exceptions import ConfigurationError

    assert PipelineConfig.from_dict({"lines": ["Fe", "si", "fe_Ka"]}).lines == ["Fe", "si", "fe_Ka"]
    with pytest.raises(ConfigurationError, match="'Qq' is neither a chemical symbol"):
        PipelineConfig.from_dict({"lines": ["Fe", "Qq"]})
