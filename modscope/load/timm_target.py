"""``timm:NAME`` -> ``timm.create_model(NAME, pretrained=False, **kwargs)``: never downloads (``--weights``
loads a checkpoint instead), ``--arg`` gives create_model's keyword arguments.

>>> load_timm("timm:resnet18", kwargs={"num_classes": 10})
"""
from __future__ import annotations

import contextlib
import difflib
import re
from typing import Any

import torch
import torch.nn as nn

from modscope.errors import LoadError, UsageError

PREFIX = "timm:"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
#: keyword arguments that would make timm download or read a file itself
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "checkpoint_path")


def load_timm(target: str, *, kwargs: dict[str, Any], device=None) -> nn.Module:
    """The timm architecture ``target`` names, randomly initialised (on ``device``), in eval mode."""
    from modscope.load.extras import require

    name = target[len(PREFIX) :]
    if not _NAME.match(name):
        raise LoadError(f"{target!r}: expected timm:NAME, a timm model name such as timm:resnet18")
    refused = [k for k in kwargs if k in _REFUSED]
    if refused:
        raise UsageError(
            f"--arg {', '.join(refused)}: modscope builds timm models with pretrained=False and never downloads; "
            "load weights with --weights CKPT"
        )
    timm = require("timm", "timm", target)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.partition(".")[0], timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise LoadError(f"timm {timm.__version__} has no model {name!r}{hint}")
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise LoadError(f"timm.create_model({name!r}) raised {type(exc).__name__}: {text[0] if text else ''}")
    return model.eval()
