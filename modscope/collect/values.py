"""Compare tensor values of two checkpoints in bounded memory.

Every tensor pair is streamed in chunks of about ``CHUNK_BYTES`` through two pairs of reusable buffers: a
reader thread fills one pair (plain file reads, so nothing stays mapped) while the other is compared.
Memory stays at a few chunks whatever the tensor and file sizes.
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

CHUNK_BYTES = 4 << 20

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


class _Slot:
    """One pair of raw byte buffers, viewed as whatever dtype the current chunk has."""

    def __init__(self):
        self.a = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        self.b = torch.empty(CHUNK_BYTES, dtype=torch.uint8)


@dataclass(frozen=True)
class _Job:
    pair: int
    start: int
    count: int


class ValueComparer:
    """``compare`` tensor pairs of two sources (anything with ``entries``/``read_into``) chunk by chunk."""

    def __init__(self, a, b, *, rtol: float = 0.0, atol: float = 0.0, progress: Progress | None = None):
        self.a, self.b = a, b
        self.rtol, self.atol = rtol, atol
        self.progress = progress
        self._scratch: dict[torch.dtype, torch.Tensor] = {}

    def compare(self, pairs: list[tuple[str, str]]) -> list[ValueStats]:
        """Statistics of A[name_a] - B[name_b] for each pair (same shapes; dtypes may differ)."""
        ea, eb = self.a.entries(), self.b.entries()
        metas = [(ea[x], eb[y]) for x, y in pairs]
        stats = [ValueStats() for _ in pairs]
        jobs = []
        for i, (ma, mb) in enumerate(metas):
            stats[i].numel = ma.numel
            step = max(1, CHUNK_BYTES // max(ma.dtype.itemsize, mb.dtype.itemsize))
            jobs.extend(_Job(i, s, min(step, ma.numel - s)) for s in range(0, ma.numel, step))

        def fetch(job: _Job, slot: _Slot):
            (na, nb), (ma, mb) = pairs[job.pair], metas[job.pair]
            ca = slot.a[: job.count * ma.dtype.itemsize].view(ma.dtype)
            cb = slot.b[: job.count * mb.dtype.itemsize].view(mb.dtype)
            self.a.read_into(na, job.start, ca)
            self.b.read_into(nb, job.start, cb)
            return ca, cb

        for job, (ca, cb) in _prefetched(jobs, fetch):
            self._update(stats[job.pair], ca, cb)
            if self.progress is not None:
                self.progress(ca.numel() * ca.element_size() + cb.numel() * cb.element_size())
        return stats

    def digests(self, source, names: list[str]) -> dict[str, bytes]:
        """A content hash of each named tensor of ``source`` (to recognise renamed tensors)."""
        entries = source.entries()
        jobs = []
        for i, name in enumerate(names):
            meta = entries[name]
            step = max(1, CHUNK_BYTES // meta.dtype.itemsize)
            jobs.extend(_Job(i, s, min(step, meta.numel - s)) for s in range(0, meta.numel, step))
        hashes = {name: hashlib.blake2b(digest_size=16) for name in names}

        def fetch(job: _Job, slot: _Slot):
            meta = entries[names[job.pair]]
            chunk = slot.a[: job.count * meta.dtype.itemsize]
            source.read_into(names[job.pair], job.start, chunk.view(meta.dtype))
            return chunk, None

        for job, (chunk, _) in _prefetched(jobs, fetch):
            hashes[names[job.pair]].update(memoryview(chunk.numpy()))
            if self.progress is not None:
                self.progress(chunk.numel())
        return {name: h.digest() for name, h in hashes.items()}

    # --- one chunk ---------------------------------------------------------------------------------------

    def _update(self, stats: ValueStats, ca: torch.Tensor, cb: torch.Tensor) -> None:
        wide = _wide(ca.dtype, cb.dtype)
        fa = ca if ca.dtype == wide else self._scratch_for(wide, 0, ca.numel()).copy_(ca)
        stats.sq_ref += float(torch.linalg.vector_norm(fa, 2)) ** 2
        if ca.dtype == cb.dtype and _bitwise_equal(ca, cb):
            return
        fb = cb if cb.dtype == wide else self._scratch_for(wide, 1, cb.numel()).copy_(cb)
        d = torch.sub(fa, fb, out=self._scratch_for(wide, 2, ca.numel()))
        sum_abs = float(torch.linalg.vector_norm(d, 1))
        if math.isfinite(sum_abs) and not (self.rtol or self.atol):
            different = int(torch.count_nonzero(d))
        else:  # non-finite values or tolerances: equal NaNs/infinities are not differences
            close = torch.isclose(fa, fb, rtol=self.rtol, atol=self.atol, equal_nan=True)
            different = int(close.numel() - torch.count_nonzero(close))
            d.masked_fill_(close, 0)
            sum_abs = float(torch.linalg.vector_norm(d, 1))
        if not different:
            return
        stats.different += different
        stats.sum_abs += sum_abs
        stats.max_abs = _nanmax(stats.max_abs, float(torch.linalg.vector_norm(d, math.inf)))
        stats.sq_diff += float(torch.linalg.vector_norm(d, 2)) ** 2

    def _scratch_for(self, dtype: torch.dtype, slot: int, n: int) -> torch.Tensor:
        key = (dtype, slot)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < n:
            buf = self._scratch[key] = torch.empty(max(n, CHUNK_BYTES // 4), dtype=dtype)
        return buf[:n]


def _prefetched(jobs: list[_Job], fetch) -> Iterator[tuple[_Job, tuple]]:
    """Yield (job, fetched) while a worker thread fetches the next job into the other buffer slot."""
    if not jobs:
        return
    slots = (_Slot(), _Slot())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modscope-read") as pool:
        pending = pool.submit(fetch, jobs[0], slots[0])
        for i, job in enumerate(jobs):
            fetched = pending.result()
            if i + 1 < len(jobs):
                pending = pool.submit(fetch, jobs[i + 1], slots[(i + 1) % 2])
            yield job, fetched


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    nbytes = a.numel() * a.element_size()
    view = np.int64 if nbytes % 8 == 0 else np.uint8
    return bool(np.array_equal(a.view(torch.uint8).numpy().view(view), b.view(torch.uint8).numpy().view(view)))


def _wide(x: torch.dtype, y: torch.dtype) -> torch.dtype:
    """The dtype differences are computed in: float64 for 64-bit and integer data, float32 otherwise."""
    if x.is_complex or y.is_complex:
        return torch.complex128
    if torch.float64 in (x, y) or not (x.is_floating_point and y.is_floating_point):
        return torch.float64
    return torch.float32


def _nanmax(current: float, new: float) -> float:
    return new if math.isnan(new) or new > current else current
