"""One line saying what user code raised, and where in the user's own files (never torch's line numbers)."""
from __future__ import annotations

import os
import traceback
from pathlib import Path

import torch

from modscope.errors import what_user_code_did


def describe_exception(exc: BaseException, source: Path | None) -> str:
    if isinstance(exc, Exception):
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:  # sys.exit() or another BaseException from the user's code
        text = what_user_code_did(exc)
    text = next((line.strip() for line in text.splitlines() if line.strip()), text.strip())  # torch's run on
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == source] if source is not None else []
    if isinstance(exc, SyntaxError) and exc.lineno and source is not None:
        return f"{text} (line {exc.lineno})"
    if own:
        return f"{text} (line {own[-1].lineno})"
    users = [f for f in frames if is_user_file(f.filename)]
    if users:  # the user's own code raised (a constructor, a sibling module): where, in their file
        return f"{text} ({Path(users[-1].filename).name} line {users[-1].lineno})"
    return text  # raised inside torch or Python: their line numbers say nothing to the user


def is_user_file(filename: str) -> bool:
    """Not Python's, torch's, an installed package's or modscope's own source: the user's code."""
    import sysconfig

    if filename.startswith("<"):
        return False
    resolved = str(Path(filename).resolve())
    ours = [Path(torch.__file__).parent, Path(__file__).parent.parent]
    ours += [Path(p) for k, p in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")]
    return not any(resolved.startswith(str(p.resolve()) + os.sep) for p in ours)
