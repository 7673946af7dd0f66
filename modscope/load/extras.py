"""Optional extras (``transformers`` for Hugging Face targets, ``timm`` for ``timm:NAME``), imported only when a
TARGET needs one; a missing one is one line naming the extra to install (exit 2)."""
from __future__ import annotations

import importlib

from modscope.errors import LoadError


def require(module: str, extra: str, what: str):
    """``import module``, or a LoadError saying ``pip install 'modscope[extra]'``.

    >>> transformers = require("transformers", "hf", "a Hugging Face model folder")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LoadError(
            f"{what} needs the optional package {module!r}, which cannot be imported ({exc}): "
            f"pip install 'modscope[{extra}]'"
        ) from None
