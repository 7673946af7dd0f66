"""Moving many 0-dim device tensors to the host at once: one transfer per device instead of one per value."""
from __future__ import annotations

from collections import defaultdict

import torch


def host_floats(scalars: list[torch.Tensor]) -> list[float]:
    """``[tensor(1.), tensor(2., device='cuda')]`` -> ``[1.0, 2.0]``, synchronising once per device."""
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for i, s in enumerate(scalars):
        by_device[s.device].append(i)
    out = [0.0] * len(scalars)
    for indices in by_device.values():
        values = torch.stack([scalars[i].detach().float().reshape(()) for i in indices]).tolist()
        for i, v in zip(indices, values):
            out[i] = v
    return out
