"""Moving many 0-dim device tensors to the host at once: one transfer per device instead of one per value."""
from __future__ import annotations

from collections import defaultdict

import torch


def host_floats(scalars: list[torch.Tensor]) -> list[float]:
    """``[tensor(1.), tensor(2., device='cuda')]`` -> ``[1.0, 2.0]``, synchronising once per device.

    The values must be 0-dim tensors (norms, minima, maxima); they are grouped by device and dtype so that each
    group is one ``torch.stack`` and one ``tolist``.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, s in enumerate(scalars):
        groups[(s.device, s.dtype)].append(i)
    out = [0.0] * len(scalars)
    for indices in groups.values():
        values = torch.stack([scalars[i] for i in indices]).detach().float().tolist()
        for i, v in zip(indices, values):
            out[i] = v
    return out
