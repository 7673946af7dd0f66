"""A pickle reader that runs nothing from the file: what a pickle would build, as plain descriptions.

``find_class`` never imports a module or returns a real callable: every global becomes a fresh ``Stub``
subclass that records its name, constructor arguments and state. Tensor reductions (``_rebuild_tensor_v2``
and kin) become ``TensorRecord``s, storages (persistent ids) ``StorageRef``s. Used to read TorchScript
archives and to check legacy ``torch.save`` files before torch reads them.

>>> InertUnpickler(io.BytesIO(data)).load()
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import torch

from modscope.checkpoint.ziparchive import printable


class Stub:
    """An object the pickle would have built: its class's qualified name, arguments and state. Nothing ran."""

    qualname = ""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items = args, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):  # pickle's BUILD: recorded, never applied
        self.state = state

    def __setitem__(self, key, value):  # SETITEM(S) on a reduced mapping
        self.items.append((key, value))

    def append(self, value):  # APPEND(S) on a reduced sequence
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


class InertDict(dict):
    """``collections.OrderedDict`` (state dicts): a plain dict whose pickled attributes are kept aside."""

    def __setstate__(self, state):
        self.state = state


@dataclass(frozen=True, eq=False)
class StorageRef:
    """A storage the pickle refers to: its key (``data/<key>`` in a zip), dtype and declared element count."""

    key: str
    dtype: torch.dtype
    numel: int
    view: Any = None  # legacy files: (view key, offset, size) of a storage view


@dataclass(frozen=True, eq=False)
class TensorRecord:
    """A tensor the pickle would rebuild: elements ``offset`` + strides of ``storage``."""

    storage: StorageRef
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return TensorRecord(storage, offset, tuple(size), tuple(stride))


def _first(data, *rest):
    return data


def _identity(value, *rest):
    return value


#: the reductions whose meaning modscope knows; anything else stays a Stub
_KNOWN = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _first,
    ("torch._utils", "_rebuild_parameter_with_state"): _first,
    ("collections", "OrderedDict"): InertDict,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
}


def storage_dtype(type_name: str) -> torch.dtype | None:
    """``FloatStorage`` -> torch.float32 (a name looked up in torch's table; nothing is imported)."""
    if type_name == "UntypedStorage":
        return torch.uint8
    try:
        return torch.storage._get_dtype_from_pickle_storage_type(type_name)
    except (KeyError, AttributeError):
        return None


class InertUnpickler(pickle.Unpickler):
    """Unpickles into Stubs, InertDicts, StorageRefs and TensorRecords; ``storages`` lists each key met and
    ``tensors`` every tensor rebuild, in pickle order."""

    def __init__(self, file, *, where: str):
        super().__init__(file, encoding="utf-8")
        self.where = where
        self.storages: dict[str, StorageRef] = {}
        self.tensors: list[TensorRecord] = []
        self._classes: dict[tuple[str, str], type] = {}

    def _record_tensor(self, storage, offset, size, stride, *rest):
        record = _rebuild_tensor(storage, offset, size, stride)
        self.tensors.append(record)
        return record

    def find_class(self, module: str, name: str):
        key = (str(module), str(name))
        if _KNOWN.get(key) is _rebuild_tensor:
            return self._record_tensor
        known = _KNOWN.get(key)
        if known is not None:
            return known
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = type("Stub", (Stub,), {"qualname": f"{key[0]}.{key[1]}"})
        return cls

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) > 1 and pid[0] in ("module", b"module"):
            return pid[1]  # legacy whole-model pickles: the module's class (a Stub), with its source text
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        type_name = storage_type.qualname.rpartition(".")[2] if isinstance(storage_type, type) and issubclass(
            storage_type, Stub
        ) else ""
        dtype = storage_dtype(type_name)
        if dtype is None or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage {printable(key, 40)} has an unknown type or size ({type_name or storage_type!r})")
        known = self.storages.get(key)
        if known is not None and (known.dtype, known.numel) != (dtype, numel):
            raise pickle.UnpicklingError(f"storage {printable(key, 40)} is declared twice with different types or sizes")
        ref = self.storages.setdefault(key, StorageRef(key, dtype, numel))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            ok = isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) and v >= 0 for v in view[1:])
            if not ok or view[1] + view[2] > numel:
                raise pickle.UnpicklingError(f"a view of storage {printable(key, 40)} reaches past its {numel} elements")
        return StorageRef(key, dtype, numel, view) if view is not None else ref
