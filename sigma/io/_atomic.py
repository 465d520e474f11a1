"""Write a file or a Zarr store so that the target is either the old one or the complete new one.

:func:`write_atomically` writes into a hidden temporary sibling of the target (same folder, so the
final rename never crosses a file system), and only when the write has finished renames it into
place. An existing target is never removed before the new data are complete:

- a file (NetCDF) is replaced by one ``os.replace``, atomic on POSIX and Windows;
- a folder (Zarr) cannot be replaced in one step, so the old folder is first renamed to a second
  hidden sibling, the new one renamed into place, and the old one deleted last. A crash between
  the two renames leaves the old store under the ``.old`` name, never a half-written one at the
  target.

A Zarr store also gets a completion record written last (the attr :data:`MARKER_ATTR`, set to
``"incomplete"`` when the write starts and replaced by the number of stored chunks of each
variable when it ends); :func:`sigma.io._netcdf.open_dataset` refuses a store whose record says
``"incomplete"`` or whose chunks no longer match (a chunk deleted later would read as zeros).

A failed write (full disk, kill, exception) leaves the target untouched and removes the
temporary sibling; a write killed by ``SIGKILL`` leaves the sibling behind, and the next write to
the same target removes it when its process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["MARKER_ATTR", "INCOMPLETE", "write_atomically", "temp_sibling"]

#: Zarr group attr: "incomplete" while written, then JSON {variable: stored chunks}; absent in
#: stores written before sigma kept it
MARKER_ATTR = "_sigma_complete"
INCOMPLETE = "incomplete"
_TMP_TAG = ".sigma-tmp-"


def temp_sibling(target: Path, tag: str = _TMP_TAG) -> Path:
    """A hidden, unique name next to ``target``, holding this process id (for later clean-up)."""
    return target.with_name(f".{target.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale(target: Path) -> None:
    """Remove temporary siblings of ``target`` left by writes whose process no longer exists."""
    prefix = f".{target.name}"
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        for tag in (_TMP_TAG, ".sigma-old-"):
            if not name.startswith(prefix + tag):
                continue
            pid_text = name[len(prefix + tag) :].split("-", 1)[0]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                logger.info("removing %s, left by an interrupted write", entry)
                _remove(entry)


def _no_space_message(target: Path, err: BaseException) -> str:
    try:
        free = shutil.disk_usage(target.parent).free / 1024**2
        free_text = f" ({free:.0f} MB free)"
    except OSError:
        free_text = ""
    kept = "the existing file is unchanged" if target.exists() else "nothing was written"
    return (
        f"no space left on the device holding {os.fspath(target.parent)!r}{free_text} while "
        f"writing {os.fspath(target)!r}; {kept}. Free some space or choose --out on another "
        f"disk. ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    )


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    tmp = temp_sibling(target)
    try:
        yield tmp
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err.errno, _no_space_message(target, err)) from err
        raise


def write_atomically(
    target: Path,
    write: Callable[[Path], None],
    *,
    is_store: bool,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``target``, then move it into place.

    Parameters
    ----------
    target
        Final path. Its parent folder must exist.
    write
        Writes the complete file (or Zarr folder) at the path it is given.
    is_store
        True for a folder (Zarr).
    finish
        Called on the temporary path after ``write`` (e.g. to write a completion record).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    OSError
        From the write; on a full disk the message says so and that ``target`` is unchanged.
    """
    _clean_stale(target)
    with _staged(target) as tmp:
        write(tmp)
        if finish is not None:
            finish(tmp)
        if not is_store:
            _fsync_path(tmp)
        if is_store and target.exists():
            old = temp_sibling(target, ".sigma-old-")
            target.replace(old)
            try:
                tmp.replace(target)
            except BaseException:
                old.replace(target)  # put the old store back
                raise
            _remove(old)
        else:
            tmp.replace(target)
    _fsync_path(target.parent)
    return target


def _fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; ignored where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
    finally:
        os.close(fd)
