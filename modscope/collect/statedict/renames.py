"""Tensor names that moved between two state dicts: ``module.`` (DDP), ``_orig_mod.`` (torch.compile),
``model.`` and other leading prefixes added, removed or replaced. Pure functions over names.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Callable, Iterable

from modscope.reports.diff import PrefixMove

#: how many leading dotted components a moved prefix may have (``_orig_mod.module.`` is two)
MAX_DEPTH = 2


def match_prefixes(
    only_a: Iterable[str],
    only_b: Iterable[str],
    same: Callable[[str, str], bool] = lambda a, b: True,
) -> tuple[list[tuple[str, str]], list[PrefixMove]]:
    """Pair names of A with names of B that differ only in a leading prefix.

    A swap is proposed by pairs that satisfy ``same`` (e.g. equal shapes, so ``encoder.0.weight`` and
    ``decoder.0.weight`` do not vote for ``encoder.`` -> ``decoder.`` by accident), then applied to every
    name it fits. The swaps that explain the most names go first; each name is paired at most once.

    >>> match_prefixes(["module.fc.weight"], ["fc.weight"])
    ([('module.fc.weight', 'fc.weight')], [PrefixMove(a_prefix='module.', b_prefix='', count=1)])
    """
    left = list(dict.fromkeys(only_a))
    right = set(only_b)
    by_rest: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for b in right:
        for prefix, rest in _splits(b):
            by_rest[rest].append((prefix, b))
    votes: Counter = Counter()
    for a in left:
        for a_prefix, rest in _splits(a):
            for b_prefix, b in by_rest.get(rest, ()):
                if a_prefix != b_prefix and same(a, b):
                    votes[(a_prefix, b_prefix)] += 1
    pairs: list[tuple[str, str]] = []
    moves: list[PrefixMove] = []
    remaining = set(left)
    # most names first; among equals, a pure strip/add before a replacement, then alphabetical
    for (a_prefix, b_prefix), _ in sorted(votes.items(), key=lambda kv: (-kv[1], bool(kv[0][0] and kv[0][1]), kv[0])):
        found = []
        for a in left:
            if a in remaining and a.startswith(a_prefix):
                b = b_prefix + a[len(a_prefix) :]
                if b in right:
                    found.append((a, b))
        for a, b in found:
            remaining.discard(a)
            right.discard(b)
        if found:
            pairs.extend(found)
            moves.append(PrefixMove(a_prefix, b_prefix, len(found)))
    return pairs, moves


def _splits(name: str):
    """(prefix, rest) for the first 0..MAX_DEPTH dotted components; rest is never empty."""
    parts = name.split(".")
    for depth in range(min(MAX_DEPTH, len(parts) - 1) + 1):
        prefix = ".".join(parts[:depth]) + "." if depth else ""
        yield prefix, ".".join(parts[depth:])
