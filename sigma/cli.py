"""The ``sigma`` command.

``sigma fit|validate|predict`` are LightningCLI subcommands (training, see
:mod:`sigma.training_cli`); ``sigma info|run|demo|gui|convert`` are plain commands, each a module
in :mod:`sigma.commands` with a ``main(argv) -> int`` function. Modules are imported only when
their command runs, so ``sigma info`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "entry", "PLAIN_COMMANDS", "LIGHTNING_COMMANDS"]

PLAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("sigma.commands.info", "print what a spectrum-image file holds"),
    "run": (
        "sigma.commands.run",
        "load -> preprocess -> train -> cluster -> analyse -> save, in one go",
    ),
    "demo": ("sigma.commands.demo", "run the whole pipeline on the built-in synthetic scene"),
    "gui": ("sigma.commands.gui", "open a results file in the interactive GUI (panel serve)"),
    "convert": (
        "sigma.commands.convert",
        "rewrite a vendor file as chunked Zarr for fast later runs",
    ),
}
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train the autoencoder (LightningCLI; see `sigma fit --help`)",
    "validate": "evaluate a trained autoencoder on the validation pixels",
    "predict": "encode every pixel and write the latent space to NetCDF/Zarr",
}


def _usage() -> str:
    lines = [
        "usage: sigma COMMAND [options]",
        "",
        "sigma finds the phases in EDS spectrum images.",
        "",
        "commands:",
    ]
    for name, (_, text) in PLAIN_COMMANDS.items():
        lines.append(f"  {name:<9} {text}")
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<9} {text}")
    lines += ["", "Run `sigma COMMAND --help` for the options of one command."]
    return "\n".join(lines) + "\n"


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``sigma`` command; returns the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from sigma import __version__

        sys.stdout.write(f"sigma {__version__}\n")
        return 0
    command = argv[0]
    from sigma.commands import _errors

    debug = "--debug" in argv
    if debug and command not in ("run", "demo"):  # the others' parsers do not know it
        argv = [a for a in argv if a != "--debug"]
    if command in PLAIN_COMMANDS:  # (Lightning's commands log through Lightning's own handler)
        _errors.configure_output(quiet="--quiet" in argv, debug=debug)
    try:
        if command in PLAIN_COMMANDS:
            module = importlib.import_module(PLAIN_COMMANDS[command][0])
            return int(module.main(argv[1:]) or 0)
        if command in LIGHTNING_COMMANDS:
            from sigma.training_cli import run_training_cli

            run_training_cli(argv)
            return 0
    except KeyboardInterrupt:
        sys.stderr.write(f"sigma {command}: interrupted\n")
        return 130
    except Exception as err:
        if debug:
            raise
        return _errors.report(f"sigma {command}", err)
    sys.stderr.write(f"sigma: unknown command {command!r}.\n\n{_usage()}")
    return 2


#: commands whose process ends right after its output is flushed (see :func:`entry`)
_FAST_EXIT = ("run", "demo", "info")


def entry() -> None:
    """The console script: :func:`main`, then exit.

    After ``sigma run``/``demo``/``info`` has written its results and closed its files, the
    interpreter's own shutdown (finalising torch, Lightning, numba and thousands of modules) took
    1.5-2 s of a 20 s run on the 2-core CPU; these commands hold nothing that needs it, so the
    process flushes its output and logging and ends at once. Other commands (LightningCLI's
    ``fit`` with DDP, ``gui``) exit normally.
    """
    rc = main()
    if sys.argv[1:2] and sys.argv[1] in _FAST_EXIT:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(rc)
    raise SystemExit(rc)


if __name__ == "__main__":  # pragma: no cover
    entry()
