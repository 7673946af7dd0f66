"""The one place where modscope touches a live model: hooks and state, always restored.

``preserved_state`` snapshots everything an analysis could disturb (train/eval flags, requires_grad, .grad,
device and dtype of every tensor, the values of parameters, buffers and tensors held as plain attributes, the
modules' other attributes, the random number generators a forward pass draws from (torch's, numpy's and
Python's), the model's hook tables)
and puts it back on exit, even when the model's forward raises. ``module_hooks`` registers per-module hooks
inside it and removes them on exit.
"""
from __future__ import annotations

import contextlib
import contextvars
import random
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.write_guard import guarding, storage_address
from modscope.core.walk import visits

_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
#: What nn.Module.__init__ puts in every module's __dict__: restored by their own rules, not as attributes.
_MODULE_OWN = frozenset(vars(nn.Module()))
_MISSING = object()
_NO_KEYS: frozenset = frozenset()
#: with ``copy_on_write``, parameters up to this size are still copied on entry: a copy of a small tensor costs
#: no more than the checksum a deferred one takes, and restores instead of only reporting
EAGER_COPY_MAX_BYTES = 1 << 16
#: ids of the modules under a ``preserved_state(carry=True)``: passes inside see each other's changes.
_CARRYING: contextvars.ContextVar[frozenset] = contextvars.ContextVar("modscope_carrying", default=frozenset())
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class StateNotRestoredWarning(UserWarning):
    """The analysed forward changed a tensor in place in a way ``preserved_state`` could not undo."""


@dataclass
class _TensorState:
    tensor: torch.Tensor
    where: str  # "Linear.weight": for the warning when it cannot be put back
    requires_grad: bool
    grad: torch.Tensor | None
    device: torch.device
    dtype: torch.dtype
    version: int | None  # None: an inference tensor, which keeps no version counter
    data: torch.Tensor | None = None  # its own storage, shape and strides at entry (None: lazy)
    place: tuple | None = None  # (data_ptr, shape, strides, offset) of ``data``, to see it replaced
    value: torch.Tensor | None = None  # a copy of its values (plain dense tensors), compared on exit
    deferred: bool = False  # its copy is made by the write guard, before the first op that writes it
    checksum: int | None = None  # of a deferred tensor's storage: a write the guard could not see changes it


@dataclass
class _Attributes:
    """One module's plain attributes (its __dict__ beyond nn.Module's own tables) and the contents of the
    lists and dicts among them, shallowly: put back when they held or now hold tensors."""

    module: nn.Module
    saved: dict
    contents: list


@contextlib.contextmanager
def preserved_state(
    model: nn.Module,
    *,
    rng_devices: tuple = (),
    modules: list[nn.Module] | None = None,
    carry: bool = False,
    copy_on_write: bool = False,
    ops_watched: bool = False,
) -> Iterator[nn.Module]:
    """Restore modes, requires_grad, .grad, devices/dtypes, tensor values, attributes, RNG state and hook
    tables on exit.

    Values: every parameter, buffer and tensor attribute of a plain dense type is copied on entry and, where
    the pass changed it in place (``p.data.mul_(2)``, ``Embedding(max_norm=...)``'s renormalisation), written
    back on exit with its version counter reset; a tensor whose data was replaced gets its own data back.
    Other tensors (meta, lazy, subclasses such as DTensor) are not copied: a change to one is reported with a
    ``StateNotRestoredWarning``. Attributes a forward set (``self.last = x``, spectral_norm's ``weight``) are
    put back as they were. The CPU generator and the CUDA generators of the devices the model's tensors are on
    are restored (with numpy's and Python's global generators: ``preserved_rng``), plus those of ``rng_devices`` (for an analysis that moves the model to a GPU), so dropout in
    an analysed forward pass does not shift the user's random stream. ``modules``: every module of ``model``
    once, when the caller has already walked it.

    ``copy_on_write=True``: parameters over ``EAGER_COPY_MAX_BYTES`` are copied only when an op first writes
    them (``modscope.collect.write_guard``; a pass that writes none copies none) and checksummed on entry and
    exit (a write the guard cannot see is reported); buffers, tensor attributes (the state a forward is meant
    to update) and small parameters are copied on entry as always. ``ops_watched``: a dispatch mode of the caller's
    hands every op of the block to the guard (``write_guard.current()``), so the guard needs no mode of its own.

    ``carry=True``: the passes run inside leave values and attributes to each other (a second call sees a
    counter the first one advanced: how ``assert_deterministic`` finds a stateful forward); this one puts
    everything back when it exits.
    """
    if modules is None:
        modules = [v.module for v in visits(model) if v.first]
    carried = _CARRYING.get()
    inner = id(model) in carried  # an enclosing carry=True state restores values and attributes
    token = _CARRYING.set(carried | {id(m) for m in modules}) if carry else None
    modes = [(m, m.training) for m in modules]
    # model.to()/.double() put *new* tensor objects into _buffers (and into _parameters when torch is set to
    # overwrite parameters on conversion): the tables are put back as they were, so the user's objects and
    # ties between modules survive a move for the pass.
    # (TorchScript modules expose read-through wrappers instead of dicts; .to() keeps their objects.)
    tables = [(t, dict(t)) for m in modules for t in (m._parameters, m._buffers) if isinstance(t, dict)]
    # the hook tables' keys (most tables are empty: an empty frozenset is shared, not built per table)
    hook_keys = [
        (m, name, set(t) if (t := getattr(m, name, None)) else _NO_KEYS) for m in modules for name in _HOOK_TABLES
    ]
    attributes = [] if inner else [a for a in map(_attributes_of, modules) if a is not None]
    tensors: dict[int, _TensorState] = {}
    lazy = copy_on_write and not inner
    for m in modules:
        kind = type(m).__name__
        for table, deferred in ((m._parameters, lazy), (m._buffers, False)):
            for key, t in table.items():
                if t is not None and id(t) not in tensors:
                    tensors[id(t)] = _snapshot(t, f"{kind}.{key}", values=not inner, defer=deferred)
    for a in attributes:
        for key, t in _attribute_tensors(a):
            if id(t) not in tensors:
                tensors[id(t)] = _snapshot(t, f"{type(a.module).__name__}.{key}")
    cuda = {torch.device(d) for d in rng_devices} | {s.device for s in tensors.values()}
    cuda_indices = sorted({d.index or 0 for d in cuda if d.type == "cuda"})
    try:
        # inside a carrying state Python's and numpy's generators carry too: a forward drawing from unseeded
        # ``random`` differs run to run, as it would for the user
        with preserved_rng(cuda_indices, host=not inner), _write_guard(tensors.values(), ops_watched):
            yield model
    finally:
        if token is not None:
            _CARRYING.reset(token)
        for m, training in modes:
            m.training = training
        for a in attributes:
            _restore_attributes(a)
        for table, saved in tables:
            if len(table) != len(saved) or any(table.get(k) is not v for k, v in saved.items()):
                table.clear()
                table.update(saved)
        for m, name, keys in hook_keys:
            table = getattr(m, name, None)
            if table:
                for key in [k for k in table if k not in keys]:
                    del table[key]
        lost = [state.where for state in tensors.values() if not _restore_tensor(state)]
        if lost:
            warnings.warn(
                f"the forward pass changed {', '.join(lost[:5])}{' and others' if len(lost) > 5 else ''} in place "
                "and modscope could not put it back (it keeps no copy of meta, lazy or subclassed tensors): the "
                "model now differs from before the analysis",
                StateNotRestoredWarning,
                stacklevel=3,
            )


@contextlib.contextmanager
def preserved_rng(cuda_indices: list[int] = (), *, host: bool = True) -> Iterator[None]:
    """Put back the global random generators a model or modscope may draw from: torch's CPU generator and the
    CUDA generators of ``cuda_indices``, and with ``host`` numpy's global ``RandomState`` (when numpy is
    loaded: SpecAugment in wav2vec2 draws from it) and Python's ``random``."""
    numpy = sys.modules.get("numpy") if host else None
    numpy_state = numpy.random.get_state() if numpy is not None else None
    python_state = random.getstate() if host else None
    try:
        with torch.random.fork_rng(devices=list(cuda_indices)):
            yield
    finally:
        if python_state is not None:
            random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)


def _attributes_of(m: nn.Module) -> _Attributes | None:
    if isinstance(m, torch.jit.ScriptModule):  # its attributes live in C++, behind read-through wrappers
        return None
    saved = {k: v for k, v in vars(m).items() if k not in _MODULE_OWN}
    contents = [(v, list(v) if type(v) is list else dict(v)) for v in saved.values() if type(v) in (list, dict)]
    return _Attributes(m, saved, contents)


def _attribute_tensors(a: _Attributes) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors held as attributes, or directly inside a list or dict attribute."""
    for key, value in a.saved.items():
        if isinstance(value, torch.Tensor):
            yield key, value
    for container, items in a.contents:
        for item in items if type(items) is list else items.values():
            if isinstance(item, torch.Tensor):
                yield "<in a list or dict attribute>", item


def _restore_attributes(a: _Attributes) -> None:
    d = vars(a.module)
    for key in [k for k in d if k not in _MODULE_OWN and k not in a.saved]:
        del d[key]  # set during the pass: a cached activation, a counter
    for key, value in a.saved.items():
        if d.get(key, _MISSING) is not value:
            d[key] = value  # straight into __dict__: no registration as a parameter or buffer
    for container, items in a.contents:  # lists and dicts of tensors (caches); a probe's log of flags stays
        if type(items) is list:
            if (len(container) != len(items) or any(x is not y for x, y in zip(container, items))) and (
                _holds_tensors(items) or _holds_tensors(container)
            ):
                container[:] = items
        elif (len(container) != len(items) or any(container.get(k, _MISSING) is not v for k, v in items.items())) and (
            _holds_tensors(items.values()) or _holds_tensors(container.values())
        ):
            container.clear()
            container.update(items)


def _holds_tensors(items) -> bool:
    return any(isinstance(item, torch.Tensor) for item in items)


def _snapshot(t: torch.Tensor, where: str, values: bool = True, defer: bool = False) -> _TensorState:
    """``defer``: the values are copied by the write guard, when an op first writes them."""
    leaf = t.is_leaf
    grad = t.grad if leaf else None  # .grad of a non-leaf (an attribute holding an activation) only warns
    lazy = is_lazy(t)  # an uninitialized parameter refuses most calls, and holds nothing to lose
    version = None if lazy or not values or t.is_inference() else t._version
    state = _TensorState(t, where, t.requires_grad, grad, t.device, t.dtype, version)
    if not lazy:
        state.data = t.data
        state.place = _place(state.data)
        if values and _copyable(state.data):
            if defer and state.data.untyped_storage().nbytes() > EAGER_COPY_MAX_BYTES:
                state.deferred = True
                state.checksum = _checksum(state.data)  # a write behind the dispatcher is seen on exit
            else:
                state.value = _copy(state.data)
    return state


@contextlib.contextmanager
def _write_guard(states, watched: bool) -> Iterator[None]:
    """Copy the deferred tensors among ``states`` when an op first writes their storage (no guard when none)."""
    by_storage: dict[int, list[_TensorState]] = {}
    for state in states:
        if state.deferred:
            key = storage_address(state.data)
            if key is not None:
                by_storage.setdefault(key, []).append(state)
    if not by_storage:
        yield
        return

    def copy(key: int) -> None:
        for state in by_storage[key]:
            state.value = _copy(state.data)

    with guarding(set(by_storage), copy, watched=watched):
        yield


def _checksum(data: torch.Tensor) -> int | None:
    """The sum, wrapping around, of the 64-bit words of ``data``'s storage (and of its last bytes): one pass,
    as fast as a float sum, and any change to a single word changes it (a permutation of words would not)."""
    try:
        storage = data.untyped_storage()
        size = storage.nbytes()
        words = torch.empty(0, dtype=torch.int64, device=data.device).set_(storage, 0, (size // 8,))
        tail = torch.empty(0, dtype=torch.uint8, device=data.device).set_(storage, 0, (size,))[size // 8 * 8:]
        with torch.no_grad():
            return int(words.sum()) * 256 + int(tail.sum(dtype=torch.int64))
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _copyable(data: torch.Tensor) -> bool:
    return type(data) is torch.Tensor and data.layout == torch.strided and not data.is_meta and not data.is_quantized


def _copy(data: torch.Tensor) -> torch.Tensor:
    """A copy of ``data``'s values: on its device, or in host memory when the device has no room for it."""
    with torch.no_grad():
        try:
            return data.clone()
        except torch.OutOfMemoryError:
            if data.device.type == "cpu":
                raise
            return data.to("cpu", copy=True)


def _place(data: torch.Tensor) -> tuple | None:
    try:
        return data.data_ptr(), data.shape, data.stride(), data.storage_offset(), data.device, data.dtype
    except (RuntimeError, NotImplementedError):  # wrapper subclasses have no storage of their own
        return None


def _restore_tensor(state: _TensorState) -> bool:
    """Put ``state`` back; False when its values changed and there is no copy to restore them from."""
    t = state.tensor
    if t.is_leaf and t.requires_grad != state.requires_grad:
        t.requires_grad_(state.requires_grad)
    if state.data is not None and state.place is not None:
        if _place(t.data) != state.place:  # moved, cast, resized or given new data during the pass
            if t.is_leaf:
                t.grad = None  # a gradient made on the pass's device/dtype cannot stay while the tensor moves back
            with torch.no_grad():
                t.data = state.data
    elif t.device != state.device or t.dtype != state.dtype:
        t.grad = None
        with torch.no_grad():
            t.data = t.data.to(device=state.device, dtype=state.dtype)
    if t.is_leaf and t.grad is not state.grad:
        t.grad = state.grad
    moved = state.version is not None and not t.is_inference() and t._version != state.version
    if state.value is not None:
        if not _same_bits(state.data, state.value):
            with torch.inference_mode() if state.data.is_inference() else torch.no_grad():
                state.data.copy_(state.value)  # through .data: autograd does not see this write
        if moved:  # autograd's check on tensors it saved sees the tensor as untouched again
            torch._C._autograd._unsafe_set_version_counter((t,), (state.version,))
        return True
    if state.checksum is not None and _checksum(state.data) != state.checksum:
        return False  # written behind torch's dispatcher (a numpy view, an extension): no copy to restore from
    # meta and lazy tensors hold no values to lose; anything else changed without a copy is reported
    return not moved or state.data is None or state.data.is_meta


def _same_bits(data: torch.Tensor, value: torch.Tensor) -> bool:
    """Bit-for-bit equal (NaN payloads and -0.0 included), in one pass over both."""
    if data.shape != value.shape or data.dtype != value.dtype:
        return False
    if value.device != data.device:  # a copy kept in host memory
        data = data.to(value.device)
    if data.is_complex():
        data, value = torch.view_as_real(data), torch.view_as_real(value)
    as_int = _SAME_SIZE_INT.get(data.element_size())
    if as_int is not None and data.dtype != as_int:
        data, value = data.view(as_int), value.view(as_int)
    return torch.equal(data, value)


PreHook = Callable[[str, nn.Module, tuple, dict], "tuple[tuple, dict] | None"]
PostHook = Callable[[str, nn.Module, tuple, dict, object, "BaseException | None"], object]


@contextlib.contextmanager
def module_hooks(
    model: nn.Module,
    *,
    pre: PreHook | None = None,
    post: PostHook | None = None,
    modules: list[tuple[str, nn.Module]] | None = None,
    replaces: bool = False,
) -> Iterator[None]:
    """Call ``pre(name, module, args, kwargs)`` and ``post(name, module, args, kwargs, output, error)`` around
    every module's forward, and remove both on exit.

    ``post`` runs even when the module's forward raises: ``output`` is then None and ``error`` the exception
    being propagated (torch calls ``always_call`` hooks from inside its ``except`` block). Return values are
    ignored unless ``replaces=True``: then, as with torch's own hooks, a non-None value replaces the inputs
    (``pre``: an ``(args, kwargs)`` pair) or the output.
    """
    if modules is None:
        modules = [(v.name, v.module) for v in visits(model) if v.first]
    with contextlib.ExitStack() as stack:
        for name, module in modules:
            if pre is not None:
                stack.enter_context(
                    module.register_forward_pre_hook(_bind_pre(pre, name, replaces), with_kwargs=True)
                )
            if post is not None:
                stack.enter_context(
                    module.register_forward_hook(_bind_post(post, name, replaces), with_kwargs=True, always_call=True)
                )
        yield


def _bind_pre(fn: PreHook, name: str, replaces: bool):
    def hook(module, args, kwargs):
        result = fn(name, module, args, kwargs)
        return result if replaces else None

    return hook


def _bind_post(fn: PostHook, name: str, replaces: bool):
    def hook(module, args, kwargs, output):
        error = sys.exc_info()[1] if output is None else None
        result = fn(name, module, args, kwargs, output, error)
        return result if replaces else None

    return hook
