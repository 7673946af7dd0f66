"""TorchScript archives read without running them: the tensors ``state_dict()`` would hold, from the records.

``torch.jit.load`` executes the archive (a class's ``__setstate__`` is code, as a pickle's reductions are),
so without ``--trust`` modscope never calls it. Instead ``data.pkl`` is read by ``inert.InertUnpickler``:
modules come back as Stubs whose state is their attributes. Which attributes are parameters and buffers is
read from each class's ``__parameters__``/``__buffers__`` lines in the archive's code (text, never run).
Names follow ``state_dict()``: per module its parameters, then its buffers, then its submodules.
"""
from __future__ import annotations

import ast
import io
import pickle
import re
import struct
from dataclasses import dataclass

from modscope.checkpoint.inert import InertDict, InertUnpickler, Stub, TensorRecord
from modscope.checkpoint.records import ArchiveReader, StoredTensor, byteorder
from modscope.checkpoint.ziparchive import ZipArchive, printable
from modscope.errors import CheckpointError, UnsafeLoadError

#: the largest code file read to learn a class's parameters (TorchScript prints a few KB per class)
_MAX_CODE_BYTES = 16 << 20
_MAX_NAMES = 1_000_000
_CLASS = re.compile(r"class (\w+)(?:\((\w*)\))?:\s*$")
_LIST = re.compile(r"  (__parameters__|__buffers__) = (\[.*\])\s*$")


def refusal(path: str) -> str:
    return f"{path} is a TorchScript archive: loading it runs code from the file; pass --trust only if you trust its source"


@dataclass
class ClassInfo:
    """What the archive's code says about one class: a Module?, its parameter and buffer names, own __setstate__?"""

    module: bool
    parameters: list[str]
    buffers: list[str]
    setstate: bool = False
    listed: bool = False  # the code printed __parameters__/__buffers__ (TorchScript always does for modules)


def open_torchscript(path: str) -> ArchiveReader:
    """The tensors of a TorchScript archive, read from its records without loading (running) it."""
    from modscope.checkpoint.torchfile import MAX_PICKLE_BYTES

    archive = ZipArchive(path)
    try:
        root = archive.root()
        order = byteorder(archive, root)
        data = archive.read_bytes(root + "data.pkl", limit=MAX_PICKLE_BYTES, what="pickle")
        try:
            obj = InertUnpickler(io.BytesIO(data), where=path).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                MemoryError, RecursionError, struct.error) as exc:  # fmt: skip
            raise CheckpointError(f"{path} is corrupt: cannot read its data.pkl ({type(exc).__name__}: {printable(str(exc), 80)})") from None
        classes = _Classes(archive, root)
        stored = {}
        for name, record in module_tensors(obj, classes, path).items():
            storage = record.storage
            stored[name] = StoredTensor(
                f"{root}data/{storage.key}", storage.dtype, record.shape, record.stride, record.offset,
                storage.numel * storage.dtype.itemsize,
            )  # fmt: skip
        return ArchiveReader(archive, stored, order=order, fmt="torchscript")
    except BaseException:
        archive.close()
        raise


def module_tensors(root, classes: "_Classes", path: str) -> dict[str, TensorRecord]:
    """Dotted name -> tensor for every parameter and buffer under the root module, in ``state_dict()`` order."""
    out: dict[str, TensorRecord] = {}
    stack: list[tuple[bool, str, Stub]] = [(True, "", root)]
    on_path: set[int] = set()
    while stack:
        entering, prefix, stub = stack.pop()
        if not entering:
            on_path.discard(id(stub))
            continue
        info = classes.of(stub, prefix, path)
        if not info.module or not info.listed:
            raise CheckpointError(f"{path}: {printable(prefix) or 'the root'} ({_short(stub)}) is not a module whose parameters the archive's code lists")
        if id(stub) in on_path:
            raise CheckpointError(f"{path} is corrupt: module {printable(prefix)} contains itself")
        on_path.add(id(stub))
        stack.append((False, prefix, stub))
        state = stub.state
        if not isinstance(state, dict):  # restored by the class's own __setstate__ code
            if info.parameters or info.buffers or _holds_data(state, classes):
                raise UnsafeLoadError(
                    f"{path}: module {printable(prefix) or '(root)'} ({_short(stub)}) restores its tensors with its own "
                    "__setstate__ code, which runs only when the archive is loaded; pass --trust only if you trust its source"
                )
            continue
        for names in (info.parameters, info.buffers):
            wanted = set(names)
            for key, value in state.items():
                if key not in wanted or value is None:
                    continue
                if not isinstance(value, TensorRecord):
                    raise CheckpointError(f"{path}: {printable(_join(prefix, key))} is stored as {printable(repr(value), 60)}, not a plain tensor")
                out[_join(prefix, key)] = value
                if len(out) > _MAX_NAMES:
                    raise CheckpointError(f"{path} names more than {_MAX_NAMES} tensors (shared modules repeated?)")
        children = [(key, value) for key, value in state.items() if isinstance(value, Stub) and classes.of(value, _join(prefix, key), path).module]
        for key, child in reversed(children):
            stack.append((True, _join(prefix, str(key)), child))
    return out


def _holds_data(state, classes: "_Classes") -> bool:
    """Whether a custom state holds tensors or modules anywhere (searched without recursion)."""
    stack, seen = [state], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, TensorRecord):
            return True
        if isinstance(value, Stub):
            return True  # a module or object whose restoring is code
        if isinstance(value, (dict, InertDict)):
            stack.extend(value.values())
            stack.extend(value.keys())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
    return False


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _short(stub: Stub) -> str:
    return printable(stub.qualname.rpartition(".")[2])


class _Classes:
    """The archive's class definitions, read (never run) from ``code/<module path>.py`` on first use."""

    def __init__(self, archive: ZipArchive, root: str):
        self._archive, self._root = archive, root
        self._files: dict[str, dict[str, ClassInfo]] = {}

    def of(self, stub: Stub, where: str, path: str) -> ClassInfo:
        module, _, name = stub.qualname.rpartition(".")
        info = self._file(module).get(name) if module.split(".")[0] == "__torch__" else None
        if info is None:
            raise CheckpointError(
                f"{path}: {printable(where) or 'the root'} is a {printable(stub.qualname)}, whose definition is not in the archive's code; "
                "modscope cannot read it without loading the archive (--trust)"
            )
        return info

    def _file(self, module: str) -> dict[str, ClassInfo]:
        found = self._files.get(module)
        if found is None:
            record = f"{self._root}code/{module.replace('.', '/')}.py"
            text = ""
            if record in self._archive.records:
                text = self._archive.read_bytes(record, limit=_MAX_CODE_BYTES, what="code file").decode("utf-8", "replace")
            found = self._files[module] = parse_classes(text)
        return found


def parse_classes(text: str) -> dict[str, ClassInfo]:
    """Class name -> ClassInfo from TorchScript's printed code (a line scan: nothing is parsed as a program)."""
    out: dict[str, ClassInfo] = {}
    current: ClassInfo | None = None
    for line in text.splitlines():
        head = _CLASS.match(line)
        if head:
            current = out[head.group(1)] = ClassInfo(head.group(2) == "Module", [], [])
            continue
        if current is None or not line.startswith("  "):
            continue
        listed = _LIST.match(line)
        if listed:
            try:
                names = ast.literal_eval(listed.group(2))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise CheckpointError(f"the archive's code lists {listed.group(1)} it cannot be read from: {printable(line, 60)}")
            current.listed = True
            (current.parameters if listed.group(1) == "__parameters__" else current.buffers).extend(names)
        elif line.startswith("  def __setstate__("):
            current.setstate = True
    return out
