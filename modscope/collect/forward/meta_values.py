"""Real values for the small tensors of a meta pass: Python checks on them are answered, the module stays on meta.

A meta tensor has no values, so ``if mask.all():`` or ``n = lengths.max().item()`` fails on it, and without
help the whole module that asked would have to run on real tensors (a decoder's backbone, 2 GB of weights,
for a check on a 2x8 mask). ``MetaValues`` keeps a real CPU *twin* next to each meta tensor whose values
are known:

- the model's inputs as they were given (``--input`` specs are drawn on CPU first, then moved to meta);
- small buffers and plain tensor attributes of the original model (never parameters: those are the weights);
- tensors the forward makes from no data (``torch.arange(n, device=x.device)``, ``torch.ones``);
- the real outputs of modules that fell back to real tensors.

While it is active (a ``TorchFunctionMode``), every torch call whose meta arguments all have twins also
runs on the twins, when its new results are small (views and in-place calls always do), so a mask derived
from the inputs keeps its values. A value read (``bool``, ``item``, ``tolist``) or an op with data-dependent
output (``nonzero``, boolean indexing) that fails on meta is then answered from the twins. A call that
changes a twinned tensor in place with an argument that has no twin makes the twin stale (never used again).
Tensors derived from the weights never have twins: reading them fails as before.

The twin computations run with torch's dispatch modes suspended, so the FLOP counter never sees them.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.weak import WeakIdKeyDictionary

#: a twin is computed only for new results of at most this many bytes (views of twins are free)
TWIN_MAX_BYTES = 16 << 20

#: values that depend only on the arguments' metadata: an argument without a twin gets a stand-in
_METADATA_ONLY = frozenset(
    {torch.zeros_like, torch.ones_like, torch.full_like, torch.Tensor.new_zeros, torch.Tensor.new_ones,
     torch.Tensor.new_full, torch.Tensor.new_tensor}
)
#: uninitialized memory: nothing to twin
_NO_VALUES = frozenset(
    {torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty, torch.Tensor.new_empty_strided}
)


class MetaValues(TorchFunctionMode):
    """The twins of one meta run (kept across its passes: the inputs are the same tensor objects)."""

    def __init__(self, max_bytes: int = TWIN_MAX_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.twins = WeakIdKeyDictionary()
        self.stale: dict[int, object] = {}  # storage id -> meta storage (kept alive, so the id stays its own)
        self.answered = 0  # value reads and data-dependent calls answered from twins

    def add(self, meta: torch.Tensor, real: torch.Tensor) -> None:
        """Remember ``real`` (CPU, same shape and dtype) as the values of ``meta``."""
        if meta.is_meta and not real.is_meta and meta.shape == real.shape and meta.dtype == real.dtype:
            self.twins[meta] = real

    def twin(self, t: torch.Tensor) -> torch.Tensor | None:
        if not t.is_meta:
            return t  # a real tensor is its own twin
        real = self.twins.get(t)
        if real is None or _storage_id(t) in self.stale:
            return None
        return real

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, spec = pytree.tree_flatten((args, kwargs))
        metas = [t for x in leaves for t in _tensors_in(x) if t.is_meta]
        watched = [(t, t._version) for t in metas if t in self.twins]
        try:
            out = func(*args, **kwargs)
        except Exception:
            real = self._on_twins(func, leaves, spec) if metas else _FAILED
            if real is _FAILED:
                raise
            self.answered += 1
            return self._as_meta(real)
        changed = [t for t, version in watched if t._version != version]
        if func in _NO_VALUES or not (changed or _has_meta(out)) or _new_bytes(out, metas) > self.max_bytes:
            real = _FAILED
        else:
            real = self._on_twins(func, leaves, spec)
        if (real is _FAILED or not self._pair(out, real)) and changed:
            for t in changed:  # changed in place, and the twins could not follow
                storage = t.untyped_storage()
                self.stale[storage._cdata] = storage
        return out

    def _on_twins(self, func, leaves, spec):
        """``func`` called with every meta tensor replaced by its twin (and meta devices by cpu), or _FAILED."""
        stand_in = func in _METADATA_ONLY
        real = []
        for x in leaves:
            if isinstance(x, torch.Tensor):
                twin = self.twin(x)
                if twin is None:
                    if not stand_in:
                        return _FAILED
                    twin = _stand_in(x)
                real.append(twin)
            elif isinstance(x, slice):  # x[:, box[0]:box[2]]: pytree does not look inside slices
                bounds = [self.twin(b) if isinstance(b, torch.Tensor) else b for b in (x.start, x.stop, x.step)]
                if any(b is None for b, given in zip(bounds, (x.start, x.stop, x.step)) if given is not None):
                    return _FAILED
                real.append(slice(*bounds))
            else:
                real.append(_cpu(x))
        args, kwargs = pytree.tree_unflatten(real, spec)
        try:
            with _disable_current_modes(), torch.no_grad():
                return func(*args, **kwargs)
        except Exception:
            return _FAILED

    def _pair(self, out, real) -> bool:
        """Attach each real result as the twin of the meta result in the same place; False if they differ."""
        metas, _ = pytree.tree_flatten(out)
        reals, _ = pytree.tree_flatten(real)
        if len(metas) != len(reals):
            return False
        pairs = []
        for m, r in zip(metas, reals):
            if isinstance(m, torch.Tensor) and m.is_meta:
                if not isinstance(r, torch.Tensor) or r.is_meta or r.shape != m.shape or r.dtype != m.dtype:
                    return False
                pairs.append((m, r))
        for m, r in pairs:
            self.twins[m] = r
        return True

    def _as_meta(self, real):
        """A result computed on twins, handed back as meta tensors (which keep it as their twins)."""

        def convert(r):
            if not isinstance(r, torch.Tensor) or r.is_meta:
                return r
            with _disable_current_modes():
                meta = torch.empty_strided(r.shape, r.stride(), dtype=r.dtype, device="meta")
            self.twins[meta] = r
            return meta

        return pytree.tree_map(convert, real)


class _Failed:
    pass


_FAILED = _Failed()


def _storage_id(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return id(t)


def _tensors_in(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, slice):
        return [b for b in (x.start, x.stop, x.step) if isinstance(b, torch.Tensor)]
    return []


def _has_meta(value) -> bool:
    return any(isinstance(x, torch.Tensor) and x.is_meta for x in pytree.tree_leaves(value))


def _new_bytes(out, metas) -> int:
    """Bytes of the meta results that are not views of (or the same storage as) a meta argument."""
    inputs = {_storage_id(t) for t in metas}
    total = 0
    for t in pytree.tree_leaves(out):
        if isinstance(t, torch.Tensor) and t.is_meta and _storage_id(t) not in inputs:
            total += t.numel() * t.element_size()
    return total


def _stand_in(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor of ``t``'s shape and dtype (zeros, one element expanded: no memory)."""
    with _disable_current_modes():
        return torch.zeros((), dtype=t.dtype).expand(t.shape)


def _cpu(value):
    if isinstance(value, torch.device) and value.type == "meta":
        return torch.device("cpu")
    if isinstance(value, str) and (value == "meta" or value.startswith("meta:")):
        return "cpu"
    return value
