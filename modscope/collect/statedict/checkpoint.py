"""What a checkpoint holds, from its headers/metadata: totals, a tree built from dotted name prefixes, and
names that share stored bytes (tied weights saved once)."""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

from modscope.collect.static.tensors import dtype_name
from modscope.errors import CheckpointError
from modscope.reports.checkpoint import CheckpointRef, CheckpointSummary, CheckpointTotals, PrefixNode, StoredTensor
from modscope.reports.static import SharedGroup, SharedKind


def checkpoint_ref(ckpt) -> CheckpointRef:
    return CheckpointRef(ckpt.path, ckpt.format, ckpt.key, tuple(ckpt.candidates))


def summarize_checkpoint(ckpt) -> CheckpointSummary:
    """Summary of a ``modscope.checkpoint.Checkpoint``; reads no tensor values.

    >>> with open_checkpoint("model.safetensors") as ckpt:
    ...     summarize_checkpoint(ckpt).totals.numel
    """
    entries = ckpt.entries()
    groups = shared_groups(entries)
    aliases = {n: tuple(m for m in g.names if m != n) for g in groups if g.kind is SharedKind.TIED for n in g.names}
    tensors = tuple(
        StoredTensor(name, meta.shape, dtype_name(meta.dtype), meta.numel, meta.nbytes, aliases.get(name, ()))
        for name, meta in entries.items()
    )
    from modscope.checkpoint.dcp_layout import dcp_layout

    return CheckpointSummary(
        checkpoint=checkpoint_ref(ckpt),
        totals=_totals(entries),
        tensors=tensors,
        nodes=tuple(prefix_tree(tensors, ckpt.path)),
        shared=tuple(groups),
        layout=dcp_layout(ckpt),
    )


def shared_groups(entries) -> list[SharedGroup]:
    """Names over the same stored bytes (``tied``) or over overlapping parts of one buffer (``storage_alias``)."""
    by_view: dict[tuple, list[str]] = defaultdict(list)
    by_storage: dict[object, set[tuple]] = defaultdict(set)
    for name, meta in entries.items():
        if meta.storage is None or meta.nbytes == 0:
            continue
        view = (meta.storage, meta.offset, meta.shape, meta.dtype)
        by_view[view].append(name)
        by_storage[meta.storage].add(view)
    groups = [SharedGroup(tuple(names), SharedKind.TIED) for names in by_view.values() if len(names) > 1]
    for views in by_storage.values():
        if len(views) > 1:
            names = tuple(by_view[v][0] for v in sorted(views, key=lambda v: (v[1], v[2])))
            groups.append(SharedGroup(names, SharedKind.STORAGE))
    return groups


#: the prefix tree's names together may not exceed this many characters (a name nesting thousands of levels
#: deep has a prefix per level, each nearly as long as the name: the tree would grow with its square)
MAX_PREFIX_CHARS = 1 << 26


def prefix_tree(tensors: tuple[StoredTensor, ...], where: str = "the checkpoint") -> list[PrefixNode]:
    """One node per dotted prefix, pre-order (first-seen order of names), with subtree totals.

    Linear in the names and the tree: each name is walked once, a prefix string made only for a new node.
    """
    children: dict[str, list[str]] = {"": []}
    leaves: dict[str, list[StoredTensor]] = defaultdict(list)
    child_of: dict[tuple[str, bool, str], str] = {}  # (node, at the name's start, part) -> child node
    budget = MAX_PREFIX_CHARS
    for tensor in tensors:
        name = tensor.name
        node, start = "", 0
        dot = name.find(".")
        while dot >= 0:
            key = (node, not start, name[start:dot])
            kid = child_of.get(key)
            if kid is None and not dot:  # a leading dot: the empty prefix is the root itself
                kid = child_of[key] = ""
            elif kid is None:
                budget -= dot
                if budget < 0:
                    raise CheckpointError(
                        f"{where}: tensor names nest too deeply to show as a tree (their prefixes exceed "
                        f"{MAX_PREFIX_CHARS} characters; e.g. a name with {name.count('.') + 1} dotted parts)"
                    )
                kid = child_of[key] = name[:dot]
                children[kid] = []
                children[node].append(kid)
            node, start = kid, dot + 1
            dot = name.find(".", start)
        leaves[node].append(tensor)
    order = []
    stack = [""]
    while stack:
        name = stack.pop()
        order.append(name)
        stack.extend(reversed(children[name]))
    totals: dict[str, tuple[int, int, int]] = {}
    signature: dict[str, str] = {}
    for name in reversed(order):
        own = leaves.get(name, [])
        kids = children[name]
        count = len(own) + sum(totals[k][0] for k in kids)
        numel = sum(t.numel for t in own) + sum(totals[k][1] for k in kids)
        nbytes = sum(t.bytes for t in own) + sum(totals[k][2] for k in kids)
        totals[name] = (count, numel, nbytes)
        cut = len(name) + 1 if name else 0
        parts = [f"{t.name[cut:]}:{t.shape}:{t.dtype}" for t in own] + [f"{k[cut:]}={signature[k]}" for k in kids]
        signature[name] = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
    return [
        PrefixNode(
            name=name,
            depth=name.count(".") + 1 if name else 0,
            children=tuple(children[name]),
            tensors=len(leaves.get(name, [])),
            numel=sum(t.numel for t in leaves.get(name, [])),
            tensors_total=totals[name][0],
            numel_total=totals[name][1],
            bytes_total=totals[name][2],
            signature=signature[name],
        )
        for name in order
    ]


def _totals(entries) -> CheckpointTotals:
    seen = set()
    numel = 0
    by_dtype: Counter = Counter()
    for meta in entries.values():
        view = (meta.storage, meta.offset, meta.shape, meta.dtype)
        if meta.storage is not None and view in seen:
            continue  # a tied name: its bytes are already counted
        seen.add(view)
        numel += meta.numel
        by_dtype[dtype_name(meta.dtype)] += meta.nbytes
    return CheckpointTotals(len(entries), numel, sum(by_dtype.values()), dict(by_dtype))
