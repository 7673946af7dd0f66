"""A checkpoint seen the way transformers loads it into a model: its keys renamed by transformers' own rules
(the conversion mapping of transformers >= 5, the ``base_model_prefix`` added or stripped), and the tied
weights the model declares (``tie_word_embeddings``), which ``save_pretrained`` leaves out of the file.

For any other model ``adapt`` changes nothing, and transformers is never imported here.

>>> view, ties, notes = adapt(model, ckpt)   # view.entries() under the model's names; ties: target -> source
"""
from __future__ import annotations

import sys
from collections import OrderedDict

import torch
import torch.nn as nn

from modscope.core.walk import join, visits
from modscope.errors import CheckpointError


def is_transformers_model(model) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (without importing transformers)."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    return isinstance(base, type) and isinstance(model, base)


def declared_ties(model: nn.Module) -> dict[str, str]:
    """target -> source for each tied weight ``model`` declares and really shares (the same tensor object)."""
    if not is_transformers_model(model):
        return {}
    declared = getattr(model, "all_tied_weights_keys", None)
    if declared is None:
        declared = getattr(model, "_tied_weights_keys", None) or ()
    tensors = _state_tensors(model)
    first: dict[int, str] = {}
    for name, tensor in tensors.items():
        first.setdefault(id(tensor), name)
    ties = {}
    for name in declared:
        tensor = tensors.get(name) if isinstance(name, str) else None
        if tensor is None:
            continue
        source = declared.get(name) if isinstance(declared, dict) else None
        if not (isinstance(source, str) and tensors.get(source) is tensor):
            source = first[id(tensor)]
        if source != name:
            ties[name] = source
    return ties


class RenamedCheckpoint:
    """A ``Checkpoint`` whose entries carry the model's names; reads go to the original names."""

    def __init__(self, ckpt, names: dict[str, str]):
        self._ckpt = ckpt
        self._names = names  # model name -> checkpoint name
        entries = ckpt.entries()
        self._entries = {new: entries[old] for new, old in names.items()}

    def __getattr__(self, attr):  # path, format, key, candidates, reader, metadata, close
        return getattr(self._ckpt, attr)

    def entries(self):
        return self._entries

    def read(self, name: str) -> torch.Tensor:
        return self._ckpt.read(self._names[name])

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        self._ckpt.read_into(self._names[name], start, out)

    def locate(self, name: str, start: int, count: int):
        return self._ckpt.locate(self._names[name], start, count)


def adapt(model: nn.Module, ckpt):
    """(checkpoint under the model's names, ties, notes) for a transformers model; (ckpt, {}, ()) otherwise."""
    if not is_transformers_model(model):
        return ckpt, {}, ()
    expected = set(_state_tensors(model))
    names, converted = _renamed(model, list(ckpt.entries()), expected)
    notes = []
    moved = [(old, new) for new, old in names.items() if old != new]
    if moved:
        old, new = moved[0]
        notes.append(
            f"{len(moved)} checkpoint key(s) renamed as transformers renames them on load (e.g. {old} -> {new})"
        )
    if converted:
        notes.append(
            f"{len(converted)} checkpoint key(s) are merged or split by transformers' conversion on load (e.g. "
            f"{converted[0]}); modscope checks them under their stored names"
        )
    view = RenamedCheckpoint(ckpt, names) if moved else ckpt
    ties = declared_ties(model)
    left_out = {t: s for t, s in ties.items() if t not in view.entries() and s in view.entries()}
    if left_out:
        target, source = next(iter(left_out.items()))
        notes.append(
            f"{len(left_out)} tied key(s) are not stored, as save_pretrained leaves them out: tied to a stored "
            f"tensor (e.g. {target} -> {source}), so loading fills them"
        )
    return view, ties, tuple(notes)


def load_hub_weights(
    model: nn.Module, weights: str, *, key: str | None = None, trust: bool = False, target: str | None = None
) -> None:
    """Load ``weights`` into a transformers model as ``from_pretrained`` would: renamed keys, tied keys filled
    from their sources; every other key must match (strict). ``target`` names the model in the error."""
    from modscope.checkpoint import open_checkpoint
    from modscope.checkpoint.weights import does_not_load, load_state_dict

    with open_checkpoint(weights, key=key, trust=trust) as ckpt:
        view, ties, _ = adapt(model, ckpt)
        state = OrderedDict((name, view.read(name)) for name in view.entries())
        for target, source in ties.items():
            if target not in state and source in state:
                state[target] = state[source]
        try:
            load_state_dict(model, state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(does_not_load(exc, model, weights, ckpt.key, target)) from None


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every state_dict name -> its tensor, tied names included (parameters and persistent buffers)."""
    out = {}
    for visit in visits(model):
        module = visit.module
        for key, tensor in module._parameters.items():
            if tensor is not None:
                out[join(visit.name, key)] = tensor
        for key, tensor in module._buffers.items():
            if tensor is not None and key not in module._non_persistent_buffers_set:
                out[join(visit.name, key)] = tensor
    return out


def _renamed(model, keys: list[str], expected: set[str]) -> tuple[dict[str, str], list[str]]:
    """(model name -> checkpoint key, keys a converter merges/splits); transformers' rules where it has them."""
    rename = _transformers_renamer(model, expected) or _prefix_renamer(model, expected)
    names: dict[str, str] = {}
    converted: list[str] = []
    for key in keys:
        new, by_converter = rename(key)
        if by_converter:
            converted.append(key)
            new = key
        if new in names:  # two stored keys land on one name: keep both stored names, let the check speak
            new = key
        names.setdefault(new, key)
    return names, converted


def _transformers_renamer(model, expected: set[str]):
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: no conversion mapping; the prefix rule below is what it does
        return None
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    present = dict.fromkeys(expected, True)
    prefix = getattr(model, "base_model_prefix", None) or None

    def rename(key: str) -> tuple[str, bool]:
        new, pattern = rename_source_key(key, renamings, converters, prefix, present)
        return new, pattern is not None

    return rename


def _prefix_renamer(model, expected: set[str]):
    prefix = getattr(model, "base_model_prefix", "") or ""

    def rename(key: str) -> tuple[str, bool]:
        if prefix and key not in expected:
            if key.startswith(prefix + ".") and key[len(prefix) + 1 :] in expected:
                return key[len(prefix) + 1 :], False
            if f"{prefix}.{key}" in expected:
                return f"{prefix}.{key}", False
        return key, False

    return rename
