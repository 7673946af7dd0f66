"""Ground-truth FLOPs for tests: a bare FlopCounterMode with torch's own SDPA formula for the CPU flash
kernel, which torch 2.14's table lacks (docs/forward.md, "FLOPs")."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_attention() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}
    return {op: lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_cpu_attention())
