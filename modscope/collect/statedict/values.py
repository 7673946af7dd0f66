"""Compare tensor values of two checkpoints in bounded memory.

Tensor pairs are streamed in reads of at most ``IO_BYTES`` per side: a reader thread prepares the next
read while the current one is compared. Small tensors are packed together into one read; big ones are
split across reads. Where a reader can say where the bytes lie raw in a file (``locate``), a read is a view
of a read-only map of that file (``modscope.checkpoint.mapped``): the reader thread faults its pages in and
they are dropped from the page tables once compared, so nothing is copied and resident memory stays at two
reads. Everything else (small pieces, formats without raw offsets) is copied into
reusable buffers with plain file reads. Memory stays at a few reads whatever the tensor and file sizes.

The comparison walks each tensor in blocks of ``BLOCK`` elements counted from its first element: big enough
that torch's per-call overhead is small, small enough to stay in the CPU's caches across the handful of passes
each gets. Blocks are shared among a few threads of our own (as many as torch would use), each running torch
with one intra-op thread: for memory-bound work on a few MiB, waking torch's thread pool for every operation
costs more than it saves (much more on a busy machine).

The statistics are deterministic: the same files give the same numbers bit for bit, whatever the read
sizes, the read path (mapped or copied), the number of threads and their timing. Reads split tensors only
at block boundaries, each block is reduced on its own by torch's own (not BLAS) reductions on one intra-op
thread, whose order depends only on the block's length, and the blocks' float64 results are added in block
order.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from modscope.checkpoint.mapped import FileMaps, check_sizes

IO_BYTES = 32 << 20  # per side and per read (two reads in flight)
MAP_MIN_BYTES = 256 << 10  # smaller pieces are copied: a map's page-table work costs more than the copy
BLOCK = 1 << 18  # elements per comparison step: the fixed grid every statistic is reduced on
MAX_WORKERS = 8  # comparison threads (at most torch's intra-op thread count)
_ALIGN = 64

Progress = Callable[[int], None]  # called with the number of bytes just read


@dataclass
class ValueStats:
    """Running statistics of A - B over a tensor's chunks."""

    numel: int = 0
    different: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sq_diff: float = 0.0
    sq_ref: float = 0.0

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.numel if self.numel else 0.0

    @property
    def rel_l2(self) -> float:
        if self.sq_ref == 0:
            return 0.0 if self.sq_diff == 0 else math.inf
        return math.sqrt(self.sq_diff) / math.sqrt(self.sq_ref)

    def merge(self, other: "ValueStats") -> None:
        """Add the statistics of other elements of the same tensor."""
        self.different += other.different
        self.sum_abs += other.sum_abs
        self.max_abs = _nanmax(self.max_abs, other.max_abs)
        self.sq_diff += other.sq_diff
        self.sq_ref += other.sq_ref


@dataclass(frozen=True)
class _Piece:
    """Elements ``start .. start + count`` of item ``item``."""

    item: int
    start: int
    count: int


def plan(items: list[tuple[int, tuple[int, ...]]]) -> list[list[_Piece]]:
    """Group (numel, itemsize per side) items into reads of at most IO_BYTES per side (or one block, when a
    block is bigger); an item is split only at multiples of BLOCK elements."""
    reads: list[list[_Piece]] = []
    current: list[_Piece] = []
    used: list[int] = []
    for item, (numel, sizes) in enumerate(items):
        used = used or [0] * len(sizes)
        start = 0
        while start < numel:
            room = max(0, min((IO_BYTES - u) // size for u, size in zip(used, sizes)))
            count = numel - start if numel - start <= room else room - room % BLOCK
            if count <= 0 and current:
                reads.append(current)
                current, used = [], [0] * len(sizes)
                continue
            count = count if count > 0 else min(BLOCK, numel - start)  # an empty read takes one block anyway
            current.append(_Piece(item, start, count))
            used = [-(-(u + count * size) // _ALIGN) * _ALIGN for u, size in zip(used, sizes)]
            start += count
    if current:
        reads.append(current)
    return reads


class ValueComparer:
    """``compare`` tensor pairs of two sources (``entries``/``read_into``/``locate``, e.g. ``Checkpoint``) in
    bounded memory."""

    def __init__(self, a, b, *, rtol: float = 0.0, atol: float = 0.0, progress: Progress | None = None):
        self.a, self.b = a, b
        self.rtol, self.atol = rtol, atol
        self.progress = progress

    def compare(self, pairs: list[tuple[str, str]]) -> list[ValueStats]:
        """Statistics of A[name_a] - B[name_b] for each pair (same shapes; dtypes may differ)."""
        ea, eb = self.a.entries(), self.b.entries()
        names = [((self.a, x), (self.b, y)) for x, y in pairs]
        metas = [(ea[x], eb[y]) for x, y in pairs]
        stats = [ValueStats(numel=ma.numel) for ma, _ in metas]
        reads = plan([(ma.numel, (ma.dtype.itemsize, mb.dtype.itemsize)) for ma, mb in metas])
        workers = [_Folder(self.rtol, self.atol) for _ in range(max(1, min(MAX_WORKERS, torch.get_num_threads())))]
        with _one_intra_op_thread(), ThreadPoolExecutor(len(workers), thread_name_prefix="modscope-diff") as pool:
            for group in _streamed(reads, names, [(ma.dtype, mb.dtype) for ma, mb in metas]):
                windows = [  # pieces start on the block grid, so every window is one block of its tensor
                    (piece.item, ca[w : w + BLOCK], cb[w : w + BLOCK])
                    for piece, (ca, cb) in group
                    for w in range(0, piece.count, BLOCK)
                ]
                share = -(-len(windows) // len(workers))
                tasks = [pool.submit(f.fold, windows[k * share : (k + 1) * share]) for k, f in enumerate(workers)]
                concurrent.futures.wait(tasks)  # all done before any error leaves: the windows stay theirs
                for task in tasks:  # in window order: each tensor's blocks are added first to last
                    for item, partial in task.result():
                        stats[item].merge(partial)
                if self.progress is not None:
                    self.progress(sum(p.count * (ca.element_size() + cb.element_size()) for p, (ca, cb) in group))
        return stats

    def digests(self, source, names: list[str]) -> dict[str, bytes]:
        """A content hash of each named tensor of ``source`` (to recognise renamed tensors)."""
        entries = source.entries()
        metas = [entries[n] for n in names]
        hashes = [hashlib.blake2b(digest_size=16) for _ in names]
        reads = plan([(m.numel, (m.dtype.itemsize,)) for m in metas])
        for group in _streamed(reads, [((source, n),) for n in names], [(m.dtype,) for m in metas]):
            for piece, (chunk,) in group:
                hashes[piece.item].update(memoryview(chunk.view(torch.uint8).numpy()))
                if self.progress is not None:
                    self.progress(piece.count * chunk.element_size())
        return {name: h.digest() for name, h in zip(names, hashes)}


class _Folder:
    """One comparison thread's state: scratch buffers for dtype conversions, reused across windows."""

    def __init__(self, rtol: float, atol: float):
        self.rtol, self.atol = rtol, atol
        self._scratch: dict[tuple, torch.Tensor] = {}

    def fold(self, windows: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[tuple[int, ValueStats]]:
        """Each window's statistics on its own, in order (the caller adds them up in block order)."""
        out = []
        for item, ca, cb in windows:
            out.append((item, ValueStats()))
            self._update(out[-1][1], ca, cb)
        return out

    def _update(self, stats: ValueStats, ca: torch.Tensor, cb: torch.Tensor) -> None:
        """Fold one window pair into ``stats``. Both may be views of read-only maps: nothing is written to them."""
        wide = _wide(ca.dtype, cb.dtype)
        fa = ca if ca.dtype == wide else self._scratch_for(wide, 0, ca.numel()).copy_(ca)
        sq_a = _sq(fa)
        stats.sq_ref += sq_a
        if ca.dtype == cb.dtype and _bitwise_equal(ca, cb):
            return
        fb = cb if cb.dtype == wide else self._scratch_for(wide, 1, cb.numel()).copy_(cb)
        if not (self.rtol or self.atol) and math.isfinite(sq_a) and math.isfinite(_sq(fb)):
            d = torch.sub(fb, fa, out=self._scratch_for(wide, 2, fb.numel()))  # no NaN/inf: nonzero = different
            d = d.abs_() if not d.is_complex() else d.abs()
            different = int(torch.count_nonzero(d.view(_SAME_SIZE_INT.get(d.dtype, d.dtype))))
        else:  # tolerances, or NaN/inf: equal NaNs and equal infinities are not differences
            close = torch.isclose(fa, fb, rtol=self.rtol, atol=self.atol, equal_nan=True)
            different = int(close.numel() - torch.count_nonzero(close))
            d = (fb - fa).abs().masked_fill_(close, 0)
        if not different:
            return
        stats.different += different
        stats.sum_abs += float(d.sum())  # one intra-op thread: the order depends on the block's length only
        stats.max_abs = _nanmax(stats.max_abs, float(d.amax()))
        stats.sq_diff += _sq(d)

    def _scratch_for(self, dtype: torch.dtype, slot: int, n: int) -> torch.Tensor:
        key = (dtype, slot)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < n:
            buf = self._scratch[key] = torch.empty(n, dtype=dtype)
        return buf[:n]

@contextlib.contextmanager
def _one_intra_op_thread():
    """torch's intra-op thread count is process-wide: set it to 1 for the comparison, restore it after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _streamed(reads: list[list[_Piece]], names, dtypes) -> Iterator[list[tuple[_Piece, tuple[torch.Tensor, ...]]]]:
    """Yield each read as [(piece, one tensor per side)] while a worker thread prepares the next one.

    ``names[item]`` gives (source, name) per side; ``dtypes[item]`` the dtype per side. The tensors are
    valid until the next read is requested; they may be views of read-only maps (never write to them).
    """
    if not reads:
        return
    sides = len(dtypes[0])
    size = max(IO_BYTES, max(_bytes_per_side(group, dtypes, side) for group in reads for side in range(sides)))
    buffers = [[torch.empty(size, dtype=torch.uint8) for _ in range(sides)] for _ in range(2)]
    maps = FileMaps()

    def fetch(group: list[_Piece], slot: list[torch.Tensor]):
        out, mapped = [], []
        used = [0] * sides  # copied pieces are packed at the start of the buffers: only they become resident
        for piece in group:
            views = []
            for side, ((source, name), dtype) in enumerate(zip(names[piece.item], dtypes[piece.item])):
                nbytes = piece.count * dtype.itemsize
                view = None
                if nbytes >= MAP_MIN_BYTES:
                    spot = source.locate(name, piece.start, piece.count)
                    if spot is not None and spot[1] % dtype.itemsize == 0:
                        view = maps.view(spot[0], spot[1], nbytes)
                if view is not None:
                    mapped.append((spot[0], spot[1], nbytes))
                    view = view.view(dtype)
                else:
                    offset = used[side]
                    used[side] = -(-(offset + nbytes) // _ALIGN) * _ALIGN
                    view = slot[side][offset : offset + nbytes].view(dtype)
                    source.read_into(name, piece.start, view)
                views.append(view)
            out.append((piece, tuple(views)))
        return out, mapped

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modscope-read") as pool:
            pending = pool.submit(fetch, reads[0], buffers[0])
            for i in range(len(reads)):
                ready, mapped = pending.result()
                if i + 1 < len(reads):
                    pending = pool.submit(fetch, reads[i + 1], buffers[(i + 1) % 2])
                check_sizes(mapped)
                yield ready
                del ready
                for spot in mapped:
                    maps.release(*spot)
    finally:
        maps.close()


def _bytes_per_side(group: list[_Piece], dtypes, side: int) -> int:
    """Buffer bytes ``group`` needs on one side, packed as ``fetch`` packs it (over IO_BYTES for one big block)."""
    used = 0
    for piece in group:
        used = -(-(used + piece.count * dtypes[piece.item][side].itemsize) // _ALIGN) * _ALIGN
    return used


_SAME_SIZE_INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same bytes. A short prefix first: chunks that differ usually differ at once, and torch.equal stops
    at the first difference; numpy compares whole equal chunks fastest."""
    if not torch.equal(a[:256].view(torch.uint8), b[:256].view(torch.uint8)):
        return False
    nbytes = a.numel() * a.element_size()
    view = np.int64 if nbytes % 8 == 0 else np.uint8
    return bool(np.array_equal(a.view(torch.uint8).numpy().view(view), b.view(torch.uint8).numpy().view(view)))


def _sq(x: torch.Tensor) -> float:
    """Sum of squares (|x|^2 for complex); non-finite when x holds NaN/inf. torch's norm reduction, not BLAS:
    a BLAS dot adds in an order that depends on the data's address and on the calling thread."""
    norm = float(torch.linalg.vector_norm(x.reshape(-1)))
    return norm * norm  # (inf, not OverflowError, past float64's range)


def _wide(x: torch.dtype, y: torch.dtype) -> torch.dtype:
    """The dtype differences are computed in: float64 for 64-bit and integer data, float32 otherwise."""
    if x.is_complex or y.is_complex:
        return torch.complex128
    if torch.float64 in (x, y) or not (x.is_floating_point and y.is_floating_point):
        return torch.float64
    return torch.float32


def _nanmax(current: float, new: float) -> float:
    return new if math.isnan(new) or new > current else current
