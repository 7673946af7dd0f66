"""``modscope diff A B``: compare two state dicts key by key, then value by value in bounded memory.

Keys are matched by name, then by a moved prefix (``module.``, ``_orig_mod.``, ``model.``: same shape
required), then by content (same shape, dtype and bytes). ``keys_only`` stops after the first two and
reads no tensor data at all.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

from modscope.collect.statedict.checkpoint import checkpoint_ref
from modscope.collect.statedict.renames import match_prefixes
from modscope.collect.statedict.values import ValueComparer
from modscope.collect.static.tensors import dtype_name
from modscope.reports.diff import DtypeChange, Rename, ShapeChange, StateDictDiff, ValueChange


def diff_checkpoints(
    a,
    b,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    keys_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> StateDictDiff:
    """Compare checkpoints ``a`` and ``b`` (``modscope.checkpoint.Checkpoint`` objects).

    ``progress(done_bytes, total_bytes)`` is called as values are read. Tolerances follow ``torch.isclose``:
    an element differs when ``|a - b| > atol + rtol * |b|``; the default (0, 0) means bitwise-equal values.

    >>> with open_checkpoint("a.pt") as a, open_checkpoint("b.safetensors") as b:
    ...     diff_checkpoints(a, b).identical
    """
    ea, eb = a.entries(), b.entries()
    only_a = [n for n in ea if n not in eb]
    only_b = [n for n in eb if n not in ea]
    renamed, moves = match_prefixes(only_a, only_b, same=lambda x, y: ea[x].shape == eb[y].shape)
    pairs = [(n, n) for n in ea if n in eb] + renamed

    budget = _Budget(progress)
    comparer = ValueComparer(a, b, rtol=rtol, atol=atol, progress=budget.advance)
    by_content: list[tuple[str, str]] = []
    if not keys_only:
        matched_a = {x for x, _ in renamed}
        matched_b = {y for _, y in renamed}
        left_a = [n for n in only_a if n not in matched_a]
        left_b = [n for n in only_b if n not in matched_b]
        by_content = _match_contents(comparer, budget, a, b, left_a, left_b)  # equal bytes: nothing to compare
        renamed = renamed + by_content

    shape_changed, dtype_changed, comparable = [], [], []
    for x, y in pairs:
        ma, mb = ea[x], eb[y]
        if ma.shape != mb.shape:
            shape_changed.append(ShapeChange(x, ma.shape, mb.shape))
            continue
        if ma.dtype != mb.dtype:
            dtype_changed.append(DtypeChange(x, dtype_name(ma.dtype), dtype_name(mb.dtype)))
        comparable.append((x, y))

    value_changed: list[ValueChange] = []
    unchanged = None
    if not keys_only:
        budget.add(sum(ea[x].nbytes + eb[y].nbytes for x, y in comparable))
        changed_dtype = {c.key for c in dtype_changed}
        unchanged = len(by_content)
        for (x, _), stats in zip(comparable, comparer.compare(comparable)):
            if stats.different:
                value_changed.append(
                    ValueChange(x, stats.max_abs, stats.mean_abs, stats.rel_l2, stats.different, stats.numel)
                )
            elif x not in changed_dtype:
                unchanged += 1

    taken_a = {x for x, _ in renamed}
    taken_b = {y for _, y in renamed}
    return StateDictDiff(
        a=checkpoint_ref(a),
        b=checkpoint_ref(b),
        only_in_a=tuple(n for n in only_a if n not in taken_a),
        only_in_b=tuple(n for n in only_b if n not in taken_b),
        renamed=tuple(Rename(x, y) for x, y in renamed),
        shape_changed=tuple(shape_changed),
        dtype_changed=tuple(dtype_changed),
        value_changed=tuple(value_changed),
        unchanged=unchanged,
        keys_only=keys_only,
        rtol=rtol,
        atol=atol,
        prefix_moves=tuple(moves),
    )


def _match_contents(comparer: ValueComparer, budget: "_Budget", a, b, left_a, left_b) -> list[tuple[str, str]]:
    """Pair leftover names whose shape, dtype and bytes are equal (a tensor renamed outright)."""
    ea, eb = a.entries(), b.entries()
    groups_a, groups_b = defaultdict(list), defaultdict(list)
    for n in left_a:
        groups_a[(ea[n].shape, ea[n].dtype)].append(n)
    for n in left_b:
        groups_b[(eb[n].shape, eb[n].dtype)].append(n)
    shared = [k for k in groups_a if k in groups_b]
    if not shared:
        return []
    names_a = [n for k in shared for n in groups_a[k]]
    names_b = [n for k in shared for n in groups_b[k]]
    budget.add(sum(ea[n].nbytes for n in names_a) + sum(eb[n].nbytes for n in names_b))
    digests_a = comparer.digests(a, names_a)
    digests_b = comparer.digests(b, names_b)
    pairs = []
    for key in shared:
        free_b = {}
        for n in groups_b[key]:
            free_b.setdefault(digests_b[n], []).append(n)
        for n in groups_a[key]:
            candidates = free_b.get(digests_a[n])
            if candidates:
                pairs.append((n, candidates.pop(0)))
    return pairs


class _Budget:
    """Turns per-chunk byte counts into ``progress(done, total)`` calls."""

    def __init__(self, progress):
        self.progress = progress
        self.done = 0
        self.total = 0

    def add(self, nbytes: int) -> None:
        self.total += nbytes

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress is not None:
            self.progress(self.done, self.total)
