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
    _record_input_size(model, kwargs)
    return model.eval()


def _record_input_size(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """A model made with ``img_size=``/``in_chans=`` takes that size, but timm leaves its ``pretrained_cfg``
    saying the pretrained one (224): the default input is made from ``pretrained_cfg``, so say it there
    (on the model modscope just built, never on a user's)."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = kwargs.get("img_size")
    if not isinstance(cfg, dict) or (size is None and "in_chans" not in kwargs):
        return
    channels, *hw = cfg.get("input_size") or (3, None, None)
    if isinstance(size, int) and size > 0:
        hw = [size, size]
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        hw = list(size)
    in_chans = kwargs.get("in_chans", channels)
    if isinstance(in_chans, int) and in_chans > 0 and all(isinstance(v, int) for v in hw):
        model.pretrained_cfg = {**cfg, "input_size": (in_chans, *hw)}
