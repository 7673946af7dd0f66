"""Checks every checkpoint reader makes before it trusts a file: only regular files are opened, reads are
bounded by a size cap, JSON nesting is bounded before parsing, and paths a checkpoint names stay inside its
folder once symlinks are resolved. Each failure is one ``CheckpointError`` line (exit 2).

>>> fd = open_regular("model.safetensors")          # refuses FIFOs, devices, sockets, folders
>>> header = load_json(raw, "model.safetensors has a corrupt safetensors header")
>>> shard = contained(folder, "model-00001.safetensors", "model.safetensors.index.json")
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import stat

import numpy as np

from modscope.errors import CheckpointError

#: JSON nesting deeper than this is refused before parsing (safetensors headers need 3, indexes a few)
MAX_JSON_DEPTH = 64

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: str, mode: int) -> CheckpointError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return CheckpointError(f"{path} is {kind}, not a regular file: modscope reads checkpoints only from regular files")


def _os_error(path: str, exc: OSError) -> CheckpointError:
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(f"{path}: no such file or directory")
    return CheckpointError(f"cannot read {path}: {exc.strerror or exc}")


def regular_file(path: str) -> os.stat_result:
    """``os.stat`` of ``path`` (following symlinks), refused unless it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st


def open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refused unless it is a regular file.

    Checked before opening (opening a FIFO would block, a device may act on open) and again on the open
    descriptor (``O_NONBLOCK`` + ``fstat``), so a file swapped in between cannot hang the read either.
    """
    regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _os_error(path, exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    os.set_blocking(fd, True)
    return fd


def read_bytes(path: str, *, limit: int, what: str = "file") -> bytes:
    """The whole of a regular file, refused when it is larger than ``limit`` bytes."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CheckpointError(f"{path} is too large for a {what}: {size} bytes (modscope reads at most {limit})")
        return read_at(fd, path, 0, size)
    finally:
        os.close(fd)


def read_at(fd: int, path: str, offset: int, count: int) -> bytes:
    """Exactly ``count`` bytes at ``offset`` of an open file, or a "truncated" error."""
    chunks = []
    done = 0
    while done < count:
        try:
            got = os.pread(fd, min(count - done, 1 << 30), offset + done)
        except OSError as exc:
            raise _os_error(path, exc) from None
        if not got:
            raise CheckpointError(f"{path} is truncated: expected {count} bytes at offset {offset}, found {done}")
        chunks.append(got)
        done += len(got)
    return b"".join(chunks)


# --- JSON ----------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in a JSON text, in linear time without parsing it.

    Brackets inside strings do not count: without escapes a string is what lies between an odd quote
    and the next one; with escapes the strings are cut out first (slower, still linear).
    """
    marks = raw.translate(None, _NOT_STRUCTURE)
    codes = np.frombuffer(marks, dtype=np.uint8)
    if b"\\" in marks:
        codes = np.frombuffer(_JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET), dtype=np.uint8)
    else:
        inside = np.cumsum(codes == ord('"'), dtype=np.int32) & 1
        codes = codes[inside == 0]
    if not codes.size:
        return 0
    return int(np.cumsum(_DEPTH_STEP[codes], dtype=np.int32).max(initial=0))


@contextlib.contextmanager
def paused_gc():
    """The cyclic garbage collector paused (and restored) while a big header is turned into objects.

    Parsing makes millions of acyclic objects; every automatic collection would walk all of them, which
    made a 1,000,000-entry header several times slower. Nothing else in modscope touches the collector.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Duplicate(ValueError):
    pass


def _unique_object(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Duplicate(name)
    return out


def load_json(raw: bytes, where: str, *, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON that a file declares, refusing nesting past ``max_depth`` and duplicate object keys.

    ``where`` starts each one-line error ("model.safetensors has a corrupt safetensors header").
    """
    depth = json_depth(raw)
    if depth > max_depth:
        raise CheckpointError(f"{where}: it nests {depth} levels deep (modscope reads at most {max_depth})")
    try:
        with paused_gc():
            return json.loads(raw, object_pairs_hook=_unique_object)
    except _Duplicate as exc:
        raise CheckpointError(f"{where}: it names {str(exc)!r} twice (ambiguous)") from None
    except RecursionError:  # not reached past the depth check; kept so no input can end in a traceback
        raise CheckpointError(f"{where}: it nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, over-long integers
        raise CheckpointError(f"{where}: not valid JSON ({exc})") from None


# --- paths ---------------------------------------------------------------------------------------------


def contained(roots: str | tuple[str, ...], name: str, where: str) -> str:
    """``name`` (relative to the first of ``roots``) resolved through symlinks; refused unless it lands inside
    one of ``roots`` (also resolved). Absolute names and ``..`` are judged the same way, by where they land."""
    roots = (roots,) if isinstance(roots, str) else roots
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{where} names an invalid file: {name!r}")
    resolved = os.path.realpath(os.path.join(roots[0], name))
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, resolved]) == real_root and resolved != real_root:
            return resolved
    raise CheckpointError(
        f"{where} names {name!r}, which lies outside its folder {roots[0]} (after resolving symlinks): refused"
    )
