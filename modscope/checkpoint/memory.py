"""Tensors already in memory (or memory-mapped by torch): legacy torch files, live models, old-torch fallbacks."""
from __future__ import annotations

from typing import Mapping

import torch

from modscope.checkpoint.base import CheckpointReader, TensorMeta


def describe(tensor: torch.Tensor) -> TensorMeta:
    """TensorMeta of a real tensor; ``storage`` is its storage's address, so tied tensors compare equal."""
    try:
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if storage[1] == 0:
            storage = None
    except (RuntimeError, NotImplementedError):
        storage = None
    return TensorMeta(tuple(tensor.shape), tensor.dtype, storage, tensor.storage_offset() * tensor.element_size())


class TensorDictReader(CheckpointReader):
    """A reader over a mapping of full name -> tensor (plus the dict nesting they came from)."""

    def __init__(self, path: str, tensors: Mapping[str, torch.Tensor], *, fmt: str, containers=None, metadata=None):
        super().__init__(path)
        self.format = fmt
        self._tensors = dict(tensors)
        self._entries = {name: describe(t) for name, t in self._tensors.items()}
        self._containers = containers
        self._metadata = metadata

    def entries(self) -> dict[str, TensorMeta]:
        return self._entries

    def containers(self):
        return self._containers

    def metadata(self):
        return self._metadata

    def read(self, name: str) -> torch.Tensor:
        return self._tensors[name].detach().cpu()
