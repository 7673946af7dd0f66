"""Copy a tensor's values the moment the first op writes it, instead of copying every weight up front.

``preserved_state`` must give back every parameter exactly as it was, and a forward may write one in place
(``p.data.mul_(2)``, ``Embedding(max_norm=...)``'s renormalisation). Copying every weight on entry and
comparing on exit read a resnet50's 100 MB three times per pass, a third of the pass itself. A
``WriteGuard`` looks only at ops whose schema says they write an argument (``mul_``, ``copy_``, ``out=``,
``set_``, ``embedding_renorm_``): the first such write into the storage of a guarded tensor copies that
tensor's values before the op runs, so exit restores it from the copy as before. It sees the ops through a
dispatch mode of its own, or through the FLOP counter's mode when the pass has one.

What a dispatch mode cannot see is not guarded this way: writes behind torch's dispatcher (a compiled
extension bound with pybind11, a numpy view) and ops whose schema hides a write (``native_batch_norm``
updates its running statistics without saying so). ``preserved_state`` therefore defers only big
parameters (weights a forward reads), checksums them to report a write it could not undo, and still copies
buffers, tensor attributes and small parameters on entry.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_NO_WRITES: tuple = ()


def storage_address(t: torch.Tensor) -> int | None:
    """The address of ``t``'s storage (shared by its views), or None for a tensor with no storage of its own."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.is_meta:
        return None
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


class WriteGuard:
    """Call ``copy(key)`` once per guarded storage, just before the first op that writes into it.

    ``before(func, args, kwargs)`` must see every op of the pass: ``guarding`` pushes a dispatch mode that
    calls it, unless the caller's own dispatch mode does (the FLOP counter's, which every recorded pass has:
    one Python mode layer costs ~6 ms on a resnet50 forward).
    """

    def __init__(self, keys: set[int], copy: Callable[[int], None]) -> None:
        self.pending = set(keys)
        self.copy = copy
        self.written: dict[int, tuple] = {}  # id(op) -> where its written arguments are: (positions, names)

    def before(self, func, args, kwargs) -> None:
        if not self.pending or isinstance(func, torch._ops.HigherOrderOperator):
            return
        where = self.written.get(id(func))
        if where is None:
            where = self.written[id(func)] = _written_arguments(func)
        if where:
            positions, names = where
            kwargs = kwargs or {}
            for value in [args[i] for i in positions if i < len(args)] + [kwargs[n] for n in names if n in kwargs]:
                self._before_write(value)

    def _before_write(self, value) -> None:
        for t in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(t, torch.Tensor):
                key = storage_address(t)
                if key in self.pending:
                    self.pending.discard(key)
                    self.copy(key)


class _GuardMode(TorchDispatchMode):
    supports_higher_order_operators = True

    def __init__(self, guard: WriteGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.guard.before(func, args, kwargs)
        return func(*args, **(kwargs or {}))


_CURRENT: contextvars.ContextVar[WriteGuard | None] = contextvars.ContextVar("modscope_write_guard", default=None)


def current() -> WriteGuard | None:
    """The guard of the innermost ``guarding`` block (for a dispatch mode that calls ``before`` itself)."""
    return _CURRENT.get()


@contextlib.contextmanager
def guarding(keys: set[int], copy: Callable[[int], None], *, watched: bool = False) -> Iterator[WriteGuard]:
    """A ``WriteGuard`` over ``keys`` for the block; ``watched``: the caller's dispatch mode calls its ``before``
    on every op (it finds the guard with ``current()``), so no mode of its own is pushed."""
    guard = WriteGuard(keys, copy)
    token = _CURRENT.set(guard)
    try:
        if watched:
            yield guard
        else:
            with _GuardMode(guard):
                yield guard
    finally:
        _CURRENT.reset(token)


def _written_arguments(func) -> tuple:
    """(positions, keyword names) of the arguments ``func``'s schema marks as written; () when none."""
    try:
        arguments = func._schema.arguments
    except AttributeError:
        return _NO_WRITES
    written = [(i, a) for i, a in enumerate(arguments) if a.alias_info is not None and a.alias_info.is_write]
    if not written:
        return _NO_WRITES
    positions = tuple(i for i, a in written if not a.kwarg_only)
    return positions, tuple(a.name for _, a in written)  # a positional argument may also be passed by name
