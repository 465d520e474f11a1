"""``sigma demo``: the whole pipeline on the built-in synthetic 8-phase scene, scored against its truth."""

from __future__ import annotations

import sys
from pathlib import Path

from sigma.commands.run import build_parser, config_from_args, parse_args, run_and_report

__all__ = ["main", "free_name"]


def free_name(path: Path) -> Path:
    """``path`` if it does not exist, else the first free ``stem_2.suffix``, ``stem_3.suffix`` ..."""
    if not path.exists():
        return path
    k = 2
    while (candidate := path.with_name(f"{path.stem}_{k}{path.suffix}")).exists():
        k += 1
    return candidate


def main(argv: list[str]) -> int:
    """Entry point of ``sigma demo``."""
    p = build_parser("sigma demo")
    p.description = (
        "Simulate the 8-phase demo scene (280 x 512 px x 2048 channels, 15 kV, ~30 counts/px), find "
        "its phases and compare them with the ground truth."
    )
    p.add_argument(
        "--counts", type=float, default=30.0, help="mean counts per pixel of the scene (default 30)"
    )
    p.add_argument(
        "--small", action="store_true", help="a 96 x 128 pixel scene (seconds instead of a minute)"
    )
    args = parse_args(p, argv)
    if args.bin_factor is None and not args.small:
        args.bin_factor = 2
    cfg = config_from_args(args)  # a bad option fails before the scene is simulated
    from sklearn.metrics import adjusted_rand_score

    from sigma.datasets import synthetic_sem

    shape = (96, 128) if args.small else (280, 512)
    ds, truth = synthetic_sem(
        shape, counts_per_pixel=args.counts, seed=args.seed or 0, show_progress=not args.quiet
    )
    out = Path(args.out) if args.out else free_name(Path.cwd() / "sigma_demo.nc")
    results = run_and_report(ds, args, out, "sigma demo: synthetic 8-phase scene", cfg)
    label = results.dataset["label"].values
    factor = truth.sizes["y"] // label.shape[0]
    true_label = truth["label"].values[::factor, ::factor][: label.shape[0], : label.shape[1]]
    ari = adjusted_rand_score(true_label.ravel(), label.ravel())
    sys.stdout.write(
        f"adjusted Rand index against the ground truth: {ari:.3f} ({truth.sizes['phase']} true phases)\n"
        f"open it in the GUI with:  sigma gui {out}\n"
    )
    return 0
