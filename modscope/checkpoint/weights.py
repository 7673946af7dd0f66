"""Load a checkpoint into a model (``--weights CKPT`` on summary and the later commands)."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from modscope.errors import CheckpointError

_MAX_MESSAGE = 300


def load_weights(model: nn.Module, weights: str, *, key: str | None = None, trust: bool = False) -> None:
    """``model.load_state_dict(<weights>, strict=True)``, reading tensors through memory maps where possible.

    >>> load_weights(model, "runs/last.ckpt", key="state_dict")
    """
    from modscope.checkpoint import open_checkpoint

    with open_checkpoint(weights, key=key, trust=trust) as ckpt:
        state = OrderedDict((name, ckpt.read(name)) for name in ckpt.entries())
        metadata = ckpt.metadata()
        if metadata:
            state._metadata = metadata  # per-module versions steer BatchNorm's backward compatibility
        on_meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
        try:
            model.load_state_dict(state, strict=True, assign=on_meta)
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
            detail = "; ".join(lines)
            if len(detail) > _MAX_MESSAGE:
                detail = detail[: _MAX_MESSAGE - 1] + "…"
            raise CheckpointError(
                f"{weights} does not load into {type(model).__name__}: {detail} "
                f"(modscope check TARGET --weights {weights} explains it)"
            ) from None
