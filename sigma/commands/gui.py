"""``sigma gui [RESULTS]``: open a results file in the interactive GUI (``panel serve``).

With no path the demo opens: the results of ``sigma demo --small``, built on first use. The command runs ``panel serve <app.py> --args RESULTS`` in
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
        "--root",
        default=None,
        help="folder the page may open results from (?results=) and write exports to "
        "(default: the current folder; the results file's folder is always allowed)",
    )
    parser.add_argument(
        "--basic-auth",
        default=None,
        metavar="PASSWORD_OR_FILE",
        help="ask for a password (Panel's --basic-auth); use it with --address other than localhost",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the panel command instead of running it"
    )
    return parser


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_results_file(path: Path, given: str) -> None:
    """Fail before the server starts when ``path`` is missing, unreadable or not sigma results.

    Checks what the GUI needs (see ``docs/results_schema.md``): ``label`` ``(y, x)`` and
    ``embedding`` ``(y, x, latent)`` with 2 latent dims, and reads the label map, so a file cut
    short fails here, in the terminal, and not as an error page after the server started.

    Raises
    ------
    FileNotFoundError, CorruptFileError, UnsupportedFormatError, NoSpectrumImageError, SchemaError
    """
    from sigma.exceptions import CorruptFileError, NoSpectrumImageError, SchemaError
    from sigma.io import READERS, open_dataset

    if not path.exists():
        raise FileNotFoundError(
            f"results file {given!r} does not exist; give a results.nc from `sigma run`."
        )
    reader = READERS.get(path.suffix.lower())
    if reader is not None and reader.name != "sigma":  # a .bcf, .emd, .pts ... spectrum image
        raise NoSpectrumImageError(
            f"{given!r} is a raw spectrum image ({reader.description}), not a results file: run "
            f"`sigma run {given}` first and open its results (`sigma gui {path.stem}_sigma.nc`)."
        )
    ds = open_dataset(path, lazy=True)
    try:
        missing = [v for v in ("label", "embedding") if v not in ds.variables]
        if missing:
            raw = "counts" in ds.variables
            raise NoSpectrumImageError(
                f"{given!r} is not a sigma results file (it lacks {missing!r})"
                + (
                    f"; it is a raw spectrum image: run `sigma run {given}` first and open its results."
                    if raw
                    else "; give a results.nc written by `sigma run`."
                )
            )
        emb, label = ds["embedding"], ds["label"]
        if tuple(label.dims) != ("y", "x") or tuple(emb.dims) != ("y", "x", "latent"):
            raise SchemaError(
                f"{given!r}: 'label' must have dims ('y', 'x') and 'embedding' ('y', 'x', 'latent'). "
                f"Got {tuple(label.dims)!r} and {tuple(emb.dims)!r}; rewrite it with `sigma run`."
            )
        if emb.sizes["latent"] != 2:
            raise SchemaError(
                f"{given!r}: the GUI shows a 2-D latent space. Got {emb.sizes['latent']!r} latent "
                "dims; run `sigma run` with a 2-D latent space."
            )
        try:
            label.values  # noqa: B018 - reading it finds a file cut short
        except (OSError, ValueError, RuntimeError) as err:
            raise CorruptFileError(
                f"{given!r}: its label map cannot be read ({type(err).__name__}: {err}); the file "
                "is damaged or was cut short. Write it again with `sigma run`."
            ) from err
    finally:
        ds.close()


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
    if args.basic_auth:
        import secrets

        cmd += ["--basic-auth", args.basic_auth, "--cookie-secret", secrets.token_hex(32)]
    if args.show:
        cmd.append("--show")
    if args.warm:  # panel's own --warm trips over its session cleanup in panel 1.9.4
        cmd += ["--setup", str(app_path().with_name("warm.py"))]
    if args.results is not None:
        results = Path(args.results).expanduser().resolve()
        check_results_file(results, str(args.results))
        cmd += ["--args", str(results)]
    elif not args.dry_run:  # the demo: `sigma demo --small`'s results, built once, here
        cmd += ["--args", str(demo_results())]
    return cmd


def demo_results() -> Path:
    """The demo results file (``sigma demo --small``, built once into ``$SIGMA_CACHE_DIR``).

    Built before the server starts, so the GUI process never trains (nor imports torch).
    """
    from gui.demo import demo_results_path  # sigma's distribution ships `gui`

    path = demo_results_path()
    sys.stderr.write(f"sigma gui: the demo results are {path}\n")
    return path


def roots_for(argv: Sequence[str]) -> list[Path]:
    """The folders the served page may read and write (see :mod:`gui.security`)."""
    args = _parser().parse_args(list(argv))
    root = Path(args.root).expanduser() if args.root else Path.cwd()
    if not root.is_dir():
        raise FileNotFoundError(f"--root {args.root!r} is not a folder; give an existing folder.")
    roots = [root.resolve()]
    if args.results:
        roots.append(Path(args.results).expanduser().resolve().parent)
    roots.append(Path(os.environ.get("SIGMA_CACHE_DIR") or Path.home() / ".cache" / "sigma"))
    return roots


def main(argv: Sequence[str]) -> int:
    """Run ``sigma gui``; returns the exit status of ``panel serve`` (2 for a bad argument)."""
    from sigma.commands._errors import one_line
    from sigma.exceptions import SigmaError

    try:
        cmd = build_command(argv)
        roots = roots_for(argv)
    except (
        SigmaError,
        OSError,
        RuntimeError,
    ) as err:  # a bad file fails here, before the server starts
        sys.stderr.write(f"sigma gui: error: {one_line(err)}\n")
        return 2
    address = cmd[cmd.index("--address") + 1]
    if address not in _LOOPBACK and "--basic-auth" not in cmd:
        sys.stderr.write(
            f"sigma gui: warning: serving on {address!r} lets anyone who can reach this machine "
            "open the results and export into the allowed folders; add --basic-auth PASSWORD "
            "(or a file holding it) to ask for a password.\n"
        )
    if "--dry-run" in argv:
        sys.stdout.write(" ".join(cmd) + "\n")
        return 0
    env = dict(os.environ)
    env["SIGMA_GUI_ROOTS"] = os.pathsep.join(str(r) for r in roots)  # see gui/security.py
    if "--args" in cmd:  # the warm-up script reads the path from the environment
        env["SIGMA_RESULTS"] = cmd[cmd.index("--args") + 1]
    return _serve(cmd, env)


def _serve(cmd: Sequence[str], env: dict[str, str]) -> int:
    """Run ``panel serve`` until it ends; a SIGTERM/SIGHUP to ``sigma gui`` stops the server too.

    (``subprocess.call`` alone left the server running, orphaned, when ``sigma gui`` was killed.)
    """
    import signal
    import threading

    proc = subprocess.Popen(list(cmd), env=env)

    def stop(signum: int, frame: object) -> None:
        proc.terminate()

    handled = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    if threading.current_thread() is not threading.main_thread():
        handled = []  # only the main thread may set signal handlers
    previous = {name: signal.signal(getattr(signal, name), stop) for name in handled}
    try:
        rc = proc.wait()
        return rc if rc >= 0 else 128 - rc  # killed by signal N: the shell's 128 + N
    except KeyboardInterrupt:  # Ctrl-C reaches the server too (same process group)
        proc.terminate()
        proc.wait()
        return 0
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
