"""``sigma gui [RESULTS]``: open a results file in the interactive GUI (``panel serve``).

With no path the demo result opens. The command runs ``panel serve <app.py> --args RESULTS`` in
this Python, so the GUI process imports no torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "app_path", "build_command"]


def app_path() -> Path:
    """Locate ``gui/app.py``: ``$SIGMA_GUI_APP``, else the ``gui`` package next to ``sigma``.

    Both a source checkout and an installed wheel (which ships the top-level ``gui`` package)
    have ``gui/`` beside ``sigma/``; failing that, wherever ``import gui`` would find it.

    Raises
    ------
    FileNotFoundError
        If the app file cannot be found (a wheel install without the GUI files).
    """
    candidates = []
    if os.environ.get("SIGMA_GUI_APP"):
        candidates.append(Path(os.environ["SIGMA_GUI_APP"]))
    here = Path(__file__).resolve()
    # a source checkout or a wheel: the top-level `gui` package sits next to `sigma`
    candidates.append(here.parents[2] / "gui" / "app.py")
    try:
        spec = importlib.util.find_spec("gui")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "app.py" for p in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"cannot find the GUI app file; looked at {[str(p) for p in candidates]!r}. Install sigma with its GUI "
        "(`pip install sigma-eds[gui]`, or `pip install -e .[gui]` from a checkout) or set SIGMA_GUI_APP=/path/to/gui/app.py."
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigma gui", description="Open a results file in the sigma GUI."
    )
    parser.add_argument("results", nargs="?", default=None,
                        help="results.nc / results.zarr written by `sigma run` (default: the demo)")  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=5006, help="port to serve on (0: any free port; default 5006)"
    )
    parser.add_argument(
        "--address", default="localhost", help="address to listen on (default localhost)"
    )
    parser.add_argument("--show", action=argparse.BooleanOptionalAction, default=True,
                        help="open a browser tab (default: --show)")  # fmt: skip
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="load the data and compile datashader before the first visitor (default: --warm)")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print the panel command instead of running it"
    )
    return parser


def build_command(argv: Sequence[str]) -> list[str]:
    """The ``panel serve`` command line ``sigma gui ARGV`` runs.

    Raises
    ------
    FileNotFoundError
        If the results path does not exist (checked here so the error comes before the server).
    """
    args = _parser().parse_args(list(argv))
    cmd = [sys.executable, "-m", "panel", "serve", str(app_path()), "--port", str(args.port),
           "--address", args.address]  # fmt: skip
    for origin in dict.fromkeys([args.address, "localhost", "127.0.0.1"]):
        cmd += ["--allow-websocket-origin", f"{origin}:{args.port}"]
    if args.show:
        cmd.append("--show")
    if args.warm:  # panel's own --warm trips over its session cleanup in panel 1.9.4
        cmd += ["--setup", str(app_path().with_name("warm.py"))]
    if args.results is not None:
        results = Path(args.results).expanduser().resolve()
        if not results.exists():
            raise FileNotFoundError(
                f"results file {str(args.results)!r} does not exist; give a results.nc from `sigma run`."
            )
        cmd += ["--args", str(results)]
    return cmd


def main(argv: Sequence[str]) -> int:
    """Run ``sigma gui``; returns the exit status of ``panel serve`` (2 for a bad argument)."""
    try:
        cmd = build_command(argv)
    except FileNotFoundError as err:
        sys.stderr.write(f"sigma gui: {err}\n")
        return 2
    if "--dry-run" in argv:
        sys.stdout.write(" ".join(cmd) + "\n")
        return 0
    env = dict(os.environ)
    if "--args" in cmd:  # the warm-up script reads the path from the environment
        env["SIGMA_RESULTS"] = cmd[cmd.index("--args") + 1]
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
