"""``sigma run``'s options: ``--config``, dotted overrides of every config key, the short aliases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sigma.cli import main
from sigma.commands.run import build_parser, config_from_args, parse_args
from sigma.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO_YAML = str(ROOT / "configs" / "run_demo.yaml")


def _config(*argv: str) -> PipelineConfig:
    parser = build_parser()
    parser.add_argument("file")
    return config_from_args(parse_args(parser, ["cube.nc", *argv]))


def test_dotted_overrides_reach_every_section() -> None:
    cfg = _config(
        "--clustering.n_components", "5",
        "--model.latent_dim", "3",
        "--model.hidden_dims", "[64, 32]",
        "--trainer.devices", "2",
        "--trainer.gradient_clip_val", "0.5",
        "--refine", "none",
        "--spatial", "false",
        "--batch_size", "128",
    )  # fmt: skip
    assert cfg.clustering.n_components == 5
    assert cfg.clustering.method == "gmm"  # the rest of the section keeps its defaults
    assert (cfg.model.latent_dim, cfg.model.hidden_dims, cfg.model.lr) == (3, [64, 32], 1e-3)
    assert cfg.trainer.to_dict() == {"devices": 2, "gradient_clip_val": 0.5}
    assert (cfg.refine, cfg.spatial, cfg.batch_size) == ("none", False, 128)
    assert _config() == PipelineConfig()  # nothing given: the defaults, not the parser's


def test_options_override_the_config_file_key_by_key() -> None:
    from_file = PipelineConfig.from_yaml(DEMO_YAML)
    cfg = _config("--config", DEMO_YAML, "--clustering.n_components", "4", "--trainer.devices", "3")
    assert cfg.clustering.n_components == 4
    assert cfg.trainer.accelerator == from_file.trainer.accelerator == "auto"  # kept
    assert cfg.trainer.devices == 3
    assert cfg.bin_factor == from_file.bin_factor == 2
    # the short aliases win over the file (a dotted key that disagrees is an error, below)
    cfg = _config("--config", DEMO_YAML, "--k", "6", "--bin", "1")
    assert (cfg.clustering.n_components, cfg.bin_factor) == (6, None)
    cfg = _config("--k", "auto", "--method", "kmeans", "--epochs", "7", "--lines", "Fe_Ka, Si_Ka")
    assert (cfg.clustering.n_components, cfg.clustering.method) == ("auto", "kmeans")
    assert (cfg.max_epochs, cfg.lines) == (7, ["Fe_Ka", "Si_Ka"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--clustering.n_compnents", "5"],
            "unrecognized arguments: --clustering.n_compnents 5 (did you mean "
            "--clustering.n_components?)",
        ),
        (["--model.latent_dims", "3"], "did you mean --model.latent_dim?"),
        (
            ["--clustering.k", "3"],
            "--clustering.k 3 (did you mean --clustering.k_max?)",
        ),  # no abbrev
        (["--clustering.n_components", "many"], "--clustering.n_components: expected an int or"),
        (["--refine", "umap"], "--refine: expected 'pca', 'features' or 'none', got 'umap'"),
        (["--model.hidden_dims", "wide"], "--model.hidden_dims: expected a list of ints"),
    ],
)
def test_bad_dotted_options_fail_at_parse_time_in_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(tmp_path / "cube.nc"), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1
    assert err.startswith("sigma run: error: ")
    assert needle in err


def test_values_out_of_range_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["run", str(tmp_path / "cube.nc"), "--clustering.n_components", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "clustering.n_components must be 'auto' or an int in the range [1, inf)" in err


def test_help_lists_the_dotted_keys_with_their_docstrings() -> None:
    text = build_parser().format_help()
    for option in ("--clustering.n_components", "--model.latent_dim", "--trainer.devices"):
        assert option in text
    assert 'Number of phases; "auto" finds it from the data.' in " ".join(text.split())
    for alias in ("--k", "--bin", "--epochs", "--smooth", "--accelerator", "--devices"):
        assert f"{alias} " in text


def test_demo_yaml_parses_into_typed_sections() -> None:
    cfg = PipelineConfig.from_yaml(DEMO_YAML)
    assert cfg.model.hidden_dims == [256, 128, 64]
    assert cfg.trainer.to_dict() == {"accelerator": "auto", "devices": 1}
    assert cfg.clustering.n_components == "auto"


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys; from sigma.commands.run import build_parser; build_parser().format_help(); "
        "print(sorted({'torch', 'lightning', 'sklearn', 'xarray'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--k", "3", "--clustering.n_components", "5"], "--k 3 and clustering.n_components 5"),
        (["--method", "kmeans", "--clustering.method", "gmm"], "--method kmeans and clustering"),
        (["--epochs", "2", "--trainer.max_epochs", "7"], "--epochs 2 and trainer.max_epochs 7"),
    ],
)
def test_a_short_flag_and_its_config_key_must_agree(argv: list[str], needle: str) -> None:
    from sigma.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="disagree; give only one") as err:
        _config(*argv)
    assert needle in str(err.value)


def test_a_short_flag_and_its_config_key_may_repeat_the_same_value() -> None:
    cfg = _config("--k", "4", "--clustering.n_components", "4")
    assert cfg.clustering.n_components == 4
    # a config file's trainer.max_epochs alone is not a conflict with an --epochs never given
    assert _config("--trainer.max_epochs", "7").trainer.max_epochs == 7


def test_lines_pick_element_maps_and_a_missing_one_is_named(tmp_path: Path) -> None:
    import numpy as np
    import xarray as xr

    from sigma.exceptions import ConfigurationError
    from sigma.map_pipeline import select_maps

    maps = xr.Dataset(
        {"features": (("y", "x", "feature"), np.zeros((2, 3, 3), np.float32))},
        coords={"feature": ["Fe", "Si_Ka", "Al"]},
    )
    assert list(select_maps(maps, None).feature.values) == ["Fe", "Si_Ka", "Al"]
    assert list(select_maps(maps, ["si", "fe"]).feature.values) == ["Si_Ka", "Fe"]
    assert list(select_maps(maps, ["Si_Ka"]).feature.values) == ["Si_Ka"]
    with pytest.raises(ConfigurationError, match="no such map; it has"):
        select_maps(maps, ["Ti"])
