"""``sigma run FILE``: load -> preprocess -> train -> encode -> cluster -> analyse -> save."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_args", "config_from_args"]


#: PipelineConfig keys whose option is hand-written (a short alias, or a simpler syntax: --lines)
_HAND_WRITTEN = (
    "bin_factor",
    "lines",
    "max_epochs",
    "smooth_labels",
    "seed",
    "keep_counts_mb",
    "library",
    "embedding",
)


def build_parser(prog: str = "sigma run") -> Any:
    """Options shared by ``sigma run`` and ``sigma demo`` (a jsonargparse parser).

    Every key of :class:`~sigma.config.PipelineConfig` is an option, nested ones dotted
    (``--clustering.n_components 5``, ``--model.latent_dim 3``, ``--trainer.devices 2``), with
    its help from the docstrings; the short flags of the README (``--k``, ``--bin``, ``--epochs``
    ...) are aliases. Parse with :func:`parse_args`, which keeps only the keys given.
    """
    from sigma.clustering.registry import method_names
    from sigma.commands import _errors as t
    from sigma.config import PipelineConfig

    p = t.config_parser(
        prog=prog,
        usage=f"{prog} [options]",
        allow_abbrev=False,  # --clustering.k is a typo, not --clustering.k_max
        description="Find the phases in a spectrum image and save a results file (NetCDF or Zarr). "
        "Settings come from the defaults, then --config FILE, then the options given.",
    )
    p.add_argument(
        "--config",
        help="pipeline YAML (keys of sigma.PipelineConfig, e.g. configs/run_demo.yaml); the "
        "options below override it",
    )
    p.add_argument(
        "--out",
        help="results file (.nc or .zarr); default: <input stem>_sigma.nc in the current folder",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--bin_factor",
        "--bin",
        type=t.bin_factor,
        dest="bin_factor",
        metavar="N",
        help="sum N x N pixels first (e.g. 2; 2,4 for y, x)",
    )
    p.add_argument(
        "--lines",
        help="comma-separated X-ray lines (Fe_Ka,Si_Ka) or 'auto'; default: the file's list, else auto",
    )
    p.add_argument(
        "--max_epochs",
        "--epochs",
        type=t.int_at_least(1, "--epochs"),
        dest="max_epochs",
        metavar="N",
        help="maximum training epochs (default 4)",
    )
    p.add_argument(
        "--smooth_labels",
        "--smooth",
        type=t.float_at_least(0.0, "--smooth"),
        dest="smooth_labels",
        metavar="SIGMA",
        help="spatial regularisation of labels (Gaussian sigma, px; default 0)",
    )
    p.add_argument("--seed", type=t.int_at_least(0, "--seed"), help="random seed (default 0)")
    p.add_argument(
        "--keep_counts_mb",
        "--keep-counts-mb",
        type=t.float_at_least(0.0, "--keep-counts-mb"),
        dest="keep_counts_mb",
        metavar="N",
        help="keep the per-pixel counts in the results when they fit N MiB (exact GUI spectra; "
        "default 128; 0: never, the results then refer to the input file)",
    )
    p.add_argument(
        "--library",
        metavar="CSV",
        help="phase library CSV (name,formula[,density]) extending sigma's; 'none' keeps line names",
    )
    p.add_argument(
        "--embedding",
        choices=["autoencoder", "umap"],
        help="2-D embedding to cluster (default autoencoder; umap needs umap-learn)",
    )
    p.add_argument(
        "--k",
        dest="n_components",
        type=t.n_components,
        help="number of phases, or 'auto' (default); short for --clustering.n_components",
    )
    p.add_argument(
        "--method",
        choices=method_names(),
        help="clustering method (default gmm); short for --clustering.method",
    )
    p.add_argument(
        "--accelerator",
        type=t.accelerator,
        help="cpu, gpu or auto (Lightning); short for --trainer.accelerator",
    )
    p.add_argument(
        "--devices",
        type=t.devices,
        help="Lightning devices, e.g. 1, 2 or auto; short for --trainer.devices",
    )
    p.add_argument(
        "--lazy", action="store_true", help="read the file lazily (dask) and stream it in chunks"
    )
    p.add_argument(
        "--dask-scheduler",
        type=t.scheduler_address,
        help="address of a Dask distributed scheduler (tcp://host:8786), or 'local'",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or INFO messages")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    before = set(map(id, p._actions))
    p.add_class_arguments(PipelineConfig, None, skip=set(_HAND_WRITTEN))
    p.config_dests = {a.dest for a in p._actions if id(a) not in before}
    return p


def parse_args(parser: Any, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``: the plain options (defaults filled in) and the dotted keys given.

    ``overrides`` holds the dotted PipelineConfig keys given (``{"clustering.n_components": 5}``),
    applied over ``--config`` by :func:`config_from_args`.
    """
    given = parser.parse_args(argv, defaults=False)
    config_dests: set[str] = getattr(parser, "config_dests", set())
    args = argparse.Namespace()
    for action in parser._actions:
        if action.dest in config_dests or argparse.SUPPRESS in (action.dest, action.default):
            continue
        setattr(args, action.dest, given.get(action.dest, action.default))
    args.overrides = {
        key: value
        for key, value in given.items()
        if key in config_dests or key.partition(".")[0] in config_dests
    }
    return args


#: short flag (argparse dest, as typed) -> the config key it sets (``--epochs`` sets the top-level
#: ``max_epochs``; ``trainer.max_epochs`` is the key it must not contradict)
_ALIASES = (
    ("n_components", "--k", ("clustering", "n_components")),
    ("method", "--method", ("clustering", "method")),
    ("accelerator", "--accelerator", ("trainer", "accelerator")),
    ("devices", "--devices", ("trainer", "devices")),
    ("max_epochs", "--epochs", ("trainer", "max_epochs")),
)


def _check_aliases(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """A short flag and the dotted option it stands for, given different values, are an error.

    (``--k 3 --clustering.n_components 5``; also ``--epochs 2`` with a ``trainer.max_epochs``
    from anywhere, which Lightning would take over ``--epochs``): say so rather than pick one
    silently. A short flag over the config file's value is the usual override, no conflict.
    """
    from sigma.exceptions import ConfigurationError

    given = getattr(args, "overrides", {})
    for dest, flag, (section, key) in _ALIASES:
        short = getattr(args, dest, None)
        if key == "max_epochs":  # from anywhere: Lightning would take it over --epochs
            sec = data.get(section)
            other = sec.get(key) if isinstance(sec, dict) else None
        else:  # a short flag overrides the config file; only a dotted option can disagree
            other = given.get(f"{section}.{key}")
        if short is not None and other is not None and str(other) != str(short):
            raise ConfigurationError(
                f"{flag} {short} and {section}.{key} {other} disagree; give only one of them."
            )


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~sigma.config.PipelineConfig`: defaults, then ``--config``, then the options."""
    from sigma.config import PipelineConfig, check_config, read_yaml

    data: dict[str, Any] = read_yaml(args.config) if args.config else {}
    check_config(data)  # the file's own mistakes first, named as in the file
    for key, value in getattr(args, "overrides", {}).items():  # --section.key value
        section, _, sub = key.partition(".")
        if sub:
            current = data.get(section)
            data[section] = {**(current if isinstance(current, dict) else {}), sub: value}
        else:
            data[key] = value
    cfg = PipelineConfig.from_dict(data)
    _check_aliases(args, data)
    if args.bin_factor is not None:
        b = args.bin_factor
        cfg.bin_factor = None if isinstance(b, int) and b <= 1 else b
    if args.lines:
        cfg.lines = (
            "auto"
            if args.lines == "auto"
            else [s.strip() for s in args.lines.split(",") if s.strip()]
        )
    for dest, _, (section, key) in _ALIASES:  # --k, --method, --accelerator, --devices
        if key != "max_epochs" and getattr(args, dest, None) is not None:
            setattr(getattr(cfg, section), key, getattr(args, dest))
    if args.max_epochs is not None:
        cfg.max_epochs = args.max_epochs
    if args.smooth_labels is not None:
        cfg.smooth_labels = args.smooth_labels
    if args.seed is not None:
        cfg.seed = args.seed
    if getattr(args, "keep_counts_mb", None) is not None:
        cfg.keep_counts_mb = args.keep_counts_mb
    if getattr(args, "library", None):
        cfg.library = args.library
    if getattr(args, "embedding", None):
        cfg.embedding = args.embedding
    check_config(cfg)  # the options given, checked like a file
    return cfg


def run_and_report(
    data: Any, args: argparse.Namespace, out: Path, label: str, cfg: Any = None
) -> Any:
    """Run the pipeline with the parsed options, print the summary; shared by run and demo.

    ``cfg``: the :func:`config_from_args` of ``args`` when already built.
    """
    from sigma.pipeline import run, summary

    if cfg is None:
        cfg = config_from_args(args)
    load_options = {"lazy": True} if getattr(args, "lazy", False) else None
    with _dask_client(args.dask_scheduler):
        results = run(
            data,
            config=cfg,
            out=out,
            overwrite=args.overwrite,
            load_options=load_options,
            show_progress=not args.quiet,
        )
    timings = json.loads(results.dataset.attrs.get("timings", "{}"))
    sys.stdout.write(f"\n{label}\n{summary(results, timings)}\nresults written to {out}\n")
    return results


class _dask_client:  # noqa: N801 - used as a context manager
    """Connect to a Dask scheduler (or start a local cluster) for the duration of a run."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.client: Any = None
        self.cluster: Any = None

    def __enter__(self) -> Any:
        if not self.address:
            return None
        from distributed import Client, LocalCluster

        if self.address == "local":
            self.cluster = LocalCluster(
                n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
            )
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.address)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def main(argv: list[str]) -> int:
    """Entry point of ``sigma run``."""
    p = build_parser()
    p.usage = "sigma run FILE [options]"
    p.add_argument(
        "file", help="spectrum image (.bcf, .emd, .spd, .pts, .rpl, .hspy, .zspy, .nc, .zarr)"
    )
    args = parse_args(p, argv)
    src = Path(args.file)
    out = Path(args.out) if args.out else Path.cwd() / f"{src.stem}_sigma.nc"
    from sigma.commands._errors import report
    from sigma.validation import check_output_path

    try:
        check_output_path(out, inputs=[src], overwrite=args.overwrite)  # before any work
        cfg = config_from_args(args)  # --config and the options, checked before any work
        run_and_report(src, args, out, f"sigma run {src.name}", cfg)
    except Exception as err:
        if args.debug:
            raise
        return report("sigma run", err)
    sys.stdout.write(f"open it in the GUI with:  sigma gui {out}\n")
    return 0
