"""``sigma run FILE``: load -> preprocess -> train -> encode -> cluster -> analyse -> save."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "config_from_args"]


def build_parser(prog: str = "sigma run") -> argparse.ArgumentParser:
    """Options shared by ``sigma run`` and ``sigma demo``."""
    from sigma.clustering.registry import method_names
    from sigma.commands import _errors as t

    p = t.OneLineParser(
        prog=prog,
        description="Find the phases in a spectrum image and save a results file (NetCDF or Zarr).",
    )
    p.add_argument(
        "--config",
        help="pipeline YAML (keys of sigma.pipeline.PipelineConfig, e.g. configs/run_demo.yaml)",
    )
    p.add_argument(
        "--out",
        help="results file (.nc or .zarr); default: <input stem>_sigma.nc in the current folder",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--bin",
        type=t.int_at_least(1, "--bin"),
        dest="bin_factor",
        metavar="N",
        help="sum N x N pixels first (e.g. 2)",
    )
    p.add_argument(
        "--lines",
        help="comma-separated X-ray lines (Fe_Ka,Si_Ka) or 'auto'; default: the file's list, else auto",
    )
    p.add_argument(
        "--k",
        dest="n_components",
        type=t.n_components,
        help="number of phases, or 'auto' (default)",
    )
    p.add_argument(
        "--method",
        choices=method_names(),
        help="clustering method (default gmm)",
    )
    p.add_argument(
        "--epochs",
        type=t.int_at_least(1, "--epochs"),
        dest="max_epochs",
        help="maximum training epochs",
    )
    p.add_argument(
        "--smooth",
        type=t.float_at_least(0.0, "--smooth"),
        dest="smooth_labels",
        help="spatial regularisation of labels (Gaussian sigma, px)",
    )
    p.add_argument("--seed", type=t.int_at_least(0, "--seed"), help="random seed (default 0)")
    p.add_argument(
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
    p.add_argument("--accelerator", type=t.accelerator, help="cpu, gpu or auto (Lightning)")
    p.add_argument("--devices", type=t.devices, help="Lightning devices, e.g. 1, 2 or auto")
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
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~sigma.pipeline.PipelineConfig` from ``--config`` plus the command-line overrides."""
    from sigma.pipeline import PipelineConfig

    cfg = PipelineConfig.from_yaml(args.config) if args.config else PipelineConfig()
    if args.bin_factor is not None:
        cfg.bin_factor = args.bin_factor if args.bin_factor > 1 else None
    if args.lines:
        cfg.lines = (
            "auto"
            if args.lines == "auto"
            else [s.strip() for s in args.lines.split(",") if s.strip()]
        )
    if args.n_components is not None:
        cfg.clustering = {**cfg.clustering, "n_components": args.n_components}
    if args.method is not None:
        cfg.clustering = {**cfg.clustering, "method": args.method}
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
    if args.accelerator is not None:
        cfg.trainer = {**cfg.trainer, "accelerator": args.accelerator}
    if args.devices is not None:
        cfg.trainer = {**cfg.trainer, "devices": args.devices}
    return cfg


def run_and_report(data: Any, args: argparse.Namespace, out: Path, label: str) -> Any:
    """Run the pipeline with the parsed options, print the summary; shared by run and demo."""
    from sigma.pipeline import run, summary

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
    p.add_argument(
        "file", help="spectrum image (.bcf, .emd, .spd, .pts, .rpl, .hspy, .zspy, .nc, .zarr)"
    )
    args = p.parse_args(argv)
    src = Path(args.file)
    out = Path(args.out) if args.out else Path.cwd() / f"{src.stem}_sigma.nc"
    from sigma.commands._errors import report
    from sigma.validation import check_output_path

    try:
        check_output_path(out, inputs=[src], overwrite=args.overwrite)  # before any work
        run_and_report(src, args, out, f"sigma run {src.name}")
    except Exception as err:
        if args.debug:
            raise
        return report("sigma run", err)
    sys.stdout.write(f"open it in the GUI with:  sigma gui {out}\n")
    return 0
