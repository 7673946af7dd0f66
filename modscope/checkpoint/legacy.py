"""The layout of a legacy (pre-1.6, non-zip) ``torch.save`` file, checked against the file before torch reads it.

The format is five pickles (magic number, protocol, system info, the object, the storage keys) followed by
each storage as an int64 element count and its raw bytes. The pickles are read inertly (nothing runs), and
every storage's declared element count must match the count written before its bytes, with the bytes inside
the file; otherwise torch would allocate what the pickle claims (a 1 KB file can claim petabytes) or leave
a storage never filled.
"""
from __future__ import annotations

import os
import pickle
import struct

from modscope.checkpoint.inert import InertUnpickler
from modscope.checkpoint.ziparchive import printable
from modscope.errors import CheckpointError

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001


def check_layout(path: str) -> None:
    """Raise CheckpointError unless every storage the pickle declares is present, complete and of its size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            storages, keys = _read_pickles(f, path)
            offset = f.tell()
            for key in keys:
                ref = storages.get(key)
                if ref is None:
                    raise CheckpointError(f"{path} is corrupt: it stores data for storage {printable(key, 40)}, which no tensor declares")
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{path} ends early: storage {printable(key, 40)} is missing (truncated?)")
                (count,) = struct.unpack("<q", head)
                if count != ref.numel:
                    raise CheckpointError(
                        f"{path} is corrupt: storage {printable(key, 40)} declares {ref.numel} elements but its data says {count}"
                    )
                offset += 8 + count * ref.dtype.itemsize
                if offset > size:
                    raise CheckpointError(
                        f"{path} ends early: storage {printable(key, 40)} needs {count * ref.dtype.itemsize} bytes past the end "
                        f"of the {size}-byte file (truncated?)"
                    )
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    missing = [key for key in storages if key not in set(keys)]
    if missing:
        raise CheckpointError(f"{path} is corrupt: storage {printable(missing[0], 40)} is declared but its data is missing")


def _read_pickles(f, path: str):
    """(declared storages by key, the storage keys in file order), reading the five pickles inertly."""
    try:
        magic = InertUnpickler(f, where=path).load()
        protocol = InertUnpickler(f, where=path).load()
        if magic != _MAGIC or protocol != _PROTOCOL:
            raise CheckpointError(f"{path} is not a torch.save file (bad magic number or protocol version)")
        InertUnpickler(f, where=path).load()  # system info
        body = InertUnpickler(f, where=path)
        body.load()
        keys = InertUnpickler(f, where=path).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, RecursionError, struct.error) as exc:  # fmt: skip
        raise CheckpointError(f"{path} is truncated or corrupt: cannot unpickle it ({type(exc).__name__}: {printable(str(exc), 80)})") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"{path} is corrupt: its list of storage keys is not a list of names")
    return body.storages, keys
