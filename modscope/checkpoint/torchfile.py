"""Files written by ``torch.save``: zip archives (.pt/.pth/.bin/.ckpt) and the legacy non-zip format.

A zip archive is unpickled with ``weights_only=True`` onto the ``meta`` device: torch then reads only the
pickle (names, shapes, dtypes, strides) and records where each storage's bytes start in the file, and
values are read from there later. Files that need code execution to unpickle are refused unless
``trust``; legacy files cannot be mapped and are read whole.
"""
from __future__ import annotations

import pickle
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from modscope.checkpoint import nested
from modscope.checkpoint.base import CheckpointReader, FileSpans, TensorMeta
from modscope.checkpoint.memory import TensorDictReader
from modscope.checkpoint.module import state_tensors
from modscope.errors import CheckpointError, UnsafeLoadError

ZIP_MAGIC = b"PK\x03\x04"


def unsafe_message(path: str, detail: str = "") -> str:
    what = f" ({detail})" if detail else ""
    return (
        f"{path} holds pickled Python objects beyond tensors and plain containers{what}; reading it would run "
        "code from the file. Pass --trust only if you trust its source"
    )


def load_pickled(source, *, trust: bool, label: str | None = None, **kwargs) -> Any:
    """``torch.load`` with ``weights_only`` unless ``trust``; every failure becomes one CheckpointError line."""
    path = label or str(source)
    try:
        return torch.load(source, weights_only=not trust, **kwargs)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if not trust and ("Weights only load failed" in text or "Unsupported global" in text):
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            raise UnsafeLoadError(unsafe_message(path, f"such as {found.group(1)}" if found else "")) from None
        raise CheckpointError(f"{path} is corrupt: cannot unpickle it ({_first_line(text)})") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:  # a damaged file makes torch's readers fail in many ways
        text = _first_line(str(exc))
        raise CheckpointError(f"{path} is truncated or corrupt: {type(exc).__name__}{': ' + text if text else ''}") from None


def _first_line(text: str) -> str:
    """The first sentence of the first line (torch's messages go on to paragraphs of advice)."""
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line.split(". ", 1)[0].rstrip(".")


def flatten(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], nested.Node, dict[str, Any]]:
    """Tensors reachable through string-keyed dicts, by dotted name; the dict tree; state_dict ``_metadata``."""
    if isinstance(obj, nn.Module):
        obj = state_tensors(obj)
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{path} holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, Any] = {}
    root = nested.Node()
    stack: list[tuple[str, Mapping, nested.Node]] = [("", obj, root)]
    while stack:
        prefix, mapping, node = stack.pop()
        for module_name, info in (getattr(mapping, "_metadata", None) or {}).items():
            metadata[_join(prefix, module_name)] = info
        for key, value in mapping.items():
            if not isinstance(key, str):
                continue
            name = _join(prefix, key)
            node.keys.add(key)
            if isinstance(value, nn.Module):
                value = state_tensors(value)
            if isinstance(value, torch.Tensor):
                tensors[name] = value
                node.tensors.append(name)
                node.scalars += value.dim() == 0
            elif isinstance(value, Mapping):
                stack.append((name, value, node.child(key)))
    return tensors, root, metadata


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else (prefix or key)


class TorchZipReader(CheckpointReader):
    """A ``torch.save`` zip archive, read through the storage offsets torch records when loading to meta."""

    format = "torch"

    def __init__(self, path: str, *, trust: bool = False, base: int = 0, obj: Any = None):
        super().__init__(path)
        if obj is None:
            obj = load_pickled(path, trust=trust, map_location="meta")
        self._files = FileSpans()
        tensors, self._root, self._metadata = flatten(obj, path)
        self._meta: dict[str, torch.Tensor] = tensors
        self._entries: dict[str, TensorMeta] = {}
        self._starts: dict[str, int] = {}  # file offset of the storage each tensor lives in
        for name, t in tensors.items():
            start = getattr(t.untyped_storage(), "_checkpoint_offset", None)
            if start is None:
                raise _NoOffsets
            self._starts[name] = base + start
            self._entries[name] = TensorMeta(
                tuple(t.shape), t.dtype, storage=(path, base + start), offset=t.storage_offset() * t.element_size()
            )

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def containers(self):
        return self._root

    def metadata(self):
        return self._metadata

    def read(self, name: str) -> torch.Tensor:
        t = self._meta[name]
        if t.is_contiguous():
            return self._files.tensor(self.path, self._data_offset(name), tuple(t.shape), t.dtype)
        span = t.untyped_storage().nbytes() // t.element_size()
        whole = self._files.tensor(self.path, self._starts[name], (span,), t.dtype)
        return whole.as_strided(t.shape, t.stride(), whole.storage_offset() + t.storage_offset())

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        if self._meta[name].is_contiguous():
            self._files.read_into(self.path, self._data_offset(name) + start * out.element_size(), out)
        else:
            super().read_into(name, start, out)

    def locate(self, name: str, start: int, count: int) -> tuple[str, int] | None:
        t = self._meta[name]
        return (self.path, self._data_offset(name) + start * t.element_size()) if t.is_contiguous() else None

    def _data_offset(self, name: str) -> int:
        t = self._meta[name]
        return self._starts[name] + t.storage_offset() * t.element_size()

    def close(self) -> None:
        super().close()
        self._files.close()


class _NoOffsets(Exception):
    """This torch does not record storage offsets when loading to meta (older releases)."""


def open_torch_zip(path: str, *, trust: bool) -> CheckpointReader:
    try:
        return TorchZipReader(path, trust=trust)
    except _NoOffsets:  # older torch: memory-map instead (pages touched while reading count as resident)
        obj = load_pickled(path, trust=trust, map_location="cpu", mmap=True)
        tensors, root, metadata = flatten(obj, path)
        return TensorDictReader(path, tensors, fmt="torch", containers=root, metadata=metadata)


def open_torch_legacy(path: str, *, trust: bool) -> CheckpointReader:
    """The pre-1.6 format cannot be memory-mapped: its tensors are read into memory."""
    obj = load_pickled(path, trust=trust, map_location="cpu")
    tensors, root, metadata = flatten(obj, path)
    return TensorDictReader(path, tensors, fmt="torch-legacy", containers=root, metadata=metadata)
