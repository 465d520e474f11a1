"""One-line errors for the ``sigma`` commands, and argparse types that check options up front.

Every error a user can cause ends the command with one line on stderr,
``sigma COMMAND: error: <problem and fix>``, and exit status 2 for a usage error (an option, a
config, the output path) or 1 for a problem with the input or the run. ``--debug`` (anywhere on
the command line) shows the traceback instead. ``docs/errors.md`` lists the messages.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from sigma.exceptions import ConfigurationError, OutputPathError

__all__ = [
    "OneLineParser",
    "config_parser",
    "one_line",
    "exit_code",
    "report",
    "int_at_least",
    "bin_factor",
    "float_at_least",
    "n_components",
    "accelerator",
    "devices",
    "scheduler_address",
    "configure_output",
]

#: exceptions that mean "the command was called wrongly" (exit status 2)
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    OutputPathError,
    FileExistsError,
)


def one_line(err: BaseException) -> str:
    """The error's message on one line (newlines and repeated spaces collapsed)."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.errno is not None:  # "[Errno 28] ..." says nothing more
        text = re.sub(r"^\[Errno \d+\] ", "", text)
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return text or type(err).__name__


def exit_code(err: BaseException) -> int:
    """2 for usage errors, 1 for everything else."""
    return 2 if isinstance(err, USAGE_ERRORS) else 1


def report(prog: str, err: BaseException) -> int:
    """Write ``prog: error: ...`` (one line) to stderr; return the exit status."""
    from sigma.exceptions import SigmaError

    text = one_line(err)
    if not isinstance(err, (SigmaError, OSError, ValueError, TypeError, KeyError)):
        text = (
            f"{type(err).__name__}: {text} (unexpected: please report it with the --debug output)"
        )
    sys.stderr.write(f"{prog}: error: {text} (--debug shows the traceback)\n")
    return exit_code(err)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}. See `{self.prog} --help`.\n")


def config_parser(**kwargs: Any) -> Any:
    """A jsonargparse ``ArgumentParser`` whose errors are one line, exit status 2.

    Like :class:`OneLineParser`; a value that does not fit a typed option says which option,
    what it expects and what it got, and an unknown ``--section.key`` names the close one.
    """
    return _config_parser_class()(**kwargs)


@functools.cache
def _config_parser_class() -> type:
    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter):  # type: ignore[misc]
        """Types and defaults for the typed (config) options; hand-written ones say their own."""

        def _get_help_string(self, action: argparse.Action) -> str:
            if type(action).__module__ == "argparse" and action.help:
                return action.help
            return _plain_rst(str(super()._get_help_string(action)))

        def start_section(self, heading: str | None) -> None:
            super().start_section(_plain_rst(heading) if heading else heading)

    class OneLineConfigParser(ArgumentParser):  # type: ignore[misc]
        """jsonargparse's parser with :class:`OneLineParser`'s errors."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

        def error(self, message: str, ex: Exception | None = None) -> NoReturn:
            """Print ``prog: error: message`` (one line) and exit with status 2."""
            text = _readable(self, str(message))
            self.exit(2, f"{self.prog}: error: {text}. See `{self.prog} --help`.\n")

    return OneLineConfigParser


def _plain_rst(text: str) -> str:
    """Docstring text for a terminal: ``:class:`~a.B``` -> ``a.B``, ````x```` -> ``x``."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _readable(parser: argparse.ArgumentParser, message: str) -> str:
    """One line that names the option, from jsonargparse's (multi-line) error message."""
    typed = re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S)
    if typed:
        key, rest = typed.groups()
        given = re.findall(r"(?:Given|Got) value: (.*)", rest)
        action = next((a for a in parser._actions if a.dest == key), None)
        hint = getattr(action, "_typehint", None)
        if given and hint is not None:
            return f"--{key}: expected {_describe(hint)}, got {given[-1].strip()!r}"
        return f"--{key}: {' '.join(rest.split())}"
    unknown = re.match(r"unrecognized arguments: (\S+)", message)
    if unknown:
        import difflib

        option = unknown.group(1).split("=")[0]
        options = [o for a in parser._actions for o in a.option_strings]
        section = option.rpartition(".")[0]
        if section:  # --clustering.k: a key of the same section first
            options = [o for o in options if o.startswith(section + ".")] or options
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{' '.join(message.split())}{hint}"
    return " ".join(message.split())


def _describe(hint: Any) -> str:
    """A type hint in words: ``int | Literal['auto']`` -> ``an int or 'auto'``."""
    import dataclasses
    import types
    import typing

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None) or hint is None:
        return "null"
    if origin is typing.Union or isinstance(hint, types.UnionType) or origin is typing.Literal:
        parts = [repr(a) if origin is typing.Literal else _describe(a) for a in args]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if origin in (list, tuple):
        plural = {int: "ints", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], _describe(args[0]))}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping of the keys of {hint.__name__}"
    words = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def bin_factor(text: str) -> Any:
    """The argparse type of ``--bin``: an int >= 1, or ints per axis like ``2,4``."""
    if not isinstance(text, str):  # (jsonargparse checks parsed values again)
        return text
    parse = int_at_least(1, "--bin")
    parts = [p for p in text.strip("[]() ").split(",") if p.strip()]
    if len(parts) > 1:
        return [parse(p.strip()) for p in parts]
    return parse(text)


def int_at_least(low: int, name: str) -> Callable[[str], int]:
    """Argparse type: an int >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number >= {low}, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_at_least(low: float, name: str) -> Callable[[str], float]:
    """Argparse type: a finite float >= ``low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number >= {low}, got {text!r}") from None
        if not value >= low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def n_components(text: str) -> Any:
    """Argparse type for ``--k``: ``auto`` or an int >= 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a number of phases >= 1, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number of phases >= 1, got {value}")
    return value


def accelerator(text: str) -> str:
    """Argparse type for ``--accelerator``: one of Lightning's names."""
    from sigma.config import ACCELERATORS

    if text.lower() not in ACCELERATORS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(ACCELERATORS)}; got {text!r}")
    return text.lower()


def devices(text: str) -> Any:
    """Argparse type for ``--devices``: ``auto``, a count, -1, or ids like ``0,1``."""
    from sigma.config import check_devices

    try:
        check_devices(text, where="the value")
    except ConfigurationError as err:
        raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None
    if not isinstance(text, str):  # (jsonargparse checks parsed values again)
        return text
    return int(text) if text.lstrip("-").isdigit() else text


_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ucx|ws|wss|inproc)://)?[A-Za-z0-9._\-]+(?::\d{1,5})?$")


def scheduler_address(text: str) -> str:
    """Argparse type for ``--dask-scheduler``: ``local`` or ``[tcp://]host[:port]``."""
    if text == "local" or (_ADDRESS.match(text) and ("://" in text or ":" in text)):
        return text
    raise argparse.ArgumentTypeError(
        f"must be 'local' or a scheduler address like tcp://host:8786; got {text!r}"
    )


def configure_output(*, quiet: bool = False, debug: bool = False) -> None:
    """Logging for a command: INFO lines, warnings as one ``sigma: warning: ...`` line each.

    WARNING and up with ``--quiet``, DEBUG with ``--debug``.
    """
    import logging
    import warnings

    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    if quiet:  # Lightning and friends log INFO lines of their own
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "distributed"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        text = " ".join(str(message).split())
        (file or sys.stderr).write(f"sigma: warning: {text}\n")

    if not debug:
        warnings.showwarning = show
