"""Writing a file the user named (``graph -o``, ``grads --plot``): atomically, with one-line errors.

The bytes go to a temporary file in the target's folder, which then replaces the target (``os.replace``):
a write that fails part way (a full disk, a size limit) leaves the old file as it was and no temporary file
behind. A target that exists but is not a regular file (``/dev/stdout``, a FIFO, ``/dev/full``) cannot be
replaced and is written in place.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from modscope.errors import OutputError


def check_output_path(path: str | Path, option: str) -> Path:
    """Refuse, before any work is done, an output path in a missing folder or naming a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder: give a file name inside it, e.g. {path / 'out'}{path.suffix}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist (create it first)"
        raise OutputError(f"{option} {path}: the folder {parent} {what}")
    return path


def write_output(path: str | Path, data: bytes, option: str) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); OutputError on any failure."""
    path = check_output_path(path, option)
    target = Path(os.path.realpath(path))  # through a symlink: the link stays, the file it names is replaced
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _error(path, option, exc) from None
    try:
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            with open(target, "wb") as out:
                out.write(data)
        else:
            _replace(target, data, existing)
    except OSError as exc:
        raise _error(path, option, exc) from None
    return path


def _replace(target: Path, data: bytes, existing: os.stat_result | None) -> None:
    temp = _create_temp(target)
    try:
        fd = os.open(temp, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if existing is not None:  # keep the old file's permissions; a new one gets 0666 less the umask
            os.chmod(temp, stat.S_IMODE(existing.st_mode))
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _create_temp(target: Path) -> Path:
    """A new empty file beside ``target``, created exclusively (mode 0666 less the umask, as open() would)."""
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "could not create a temporary file", str(target.parent))


def _error(path: Path, option: str, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += f" (is {path.parent} writable?)"
    return OutputError(f"cannot write {option} {path}: {reason}")
