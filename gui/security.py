"""Which folders a served GUI may read results from and write exports to.

A served page takes paths from the browser (``?results=PATH``, the export folder and the
save-as name). ``sigma gui`` and ``gui/app.py`` therefore set :data:`ROOTS_ENV` to the folders
allowed (``sigma gui --root DIR``, default the current folder, plus the folder of the results
file given on the command line); a path outside them is refused with the same message whether or
not it exists, so the page reveals nothing about the rest of the disk. With the variable unset
(the views used from Python) nothing is restricted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ROOTS_ENV", "allowed_roots", "set_roots", "check_allowed", "default_roots"]

#: environment variable holding the allowed folders, separated by ``os.pathsep``
ROOTS_ENV = "SIGMA_GUI_ROOTS"


def default_roots(
    root: str | os.PathLike[str] | None = None, results: str | os.PathLike[str] | None = None
) -> list[Path]:
    """The folders a served GUI may use.

    ``root`` (default: the current folder), the folder of the trusted ``results`` file given
    on the command line, and the demo's cache folder (``$SIGMA_CACHE_DIR`` or ``~/.cache/sigma``).
    """
    roots = [Path(root) if root is not None else Path.cwd()]
    if results:
        roots.append(Path(results).expanduser().resolve().parent)
    roots.append(Path(os.environ.get("SIGMA_CACHE_DIR") or Path.home() / ".cache" / "sigma"))
    return roots


def set_roots(roots: Iterable[str | os.PathLike[str]]) -> str:
    """Set :data:`ROOTS_ENV` for this process (and its children); returns the value."""
    value = os.pathsep.join(str(Path(r).expanduser().resolve()) for r in roots)
    os.environ[ROOTS_ENV] = value
    return value


def allowed_roots() -> list[Path] | None:
    """The allowed folders, or None when nothing is restricted."""
    value = os.environ.get(ROOTS_ENV)
    if not value:
        return None
    return [Path(p) for p in value.split(os.pathsep) if p]


def check_allowed(path: str | os.PathLike[str], *, what: str = "path") -> Path:
    """Return ``path`` resolved (symlinks followed) if it lies inside an allowed folder.

    Raises
    ------
    PermissionError
        If it lies outside every allowed folder. The message does not say whether it exists.
    """
    resolved = Path(path).expanduser().resolve()
    roots = allowed_roots()
    if roots is None:
        return resolved
    for root in roots:
        if resolved == root or root in resolved.parents:
            return resolved
    raise PermissionError(
        f"{what} {os.fspath(path)!r} is outside the folders this GUI may use "
        f"({', '.join(map(str, roots))}). Start it with `sigma gui --root FOLDER` to allow another "
        "folder."
    )
