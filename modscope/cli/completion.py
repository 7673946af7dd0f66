"""Shell completion of TARGETs: files and folders, and the ``:Name``s a Python file defines.

Typer's ``--install-completion`` / ``--show-completion`` install or print the shell script; the script asks
``modscope`` for candidates (``_MODSCOPE_COMPLETE=complete_bash`` and the words typed) and this module answers.
A file's names are read with ``ast`` (load/source_names.py): pressing TAB never imports or runs a model file.

bash splits words at ``:`` (it is in ``COMP_WORDBREAKS``), so ``file.py:Le`` reaches a completer as three
words; ``ColonAwareBash`` joins them back and answers with what replaces the word bash is completing.

>>> complete_target("examples/lenet.py:Le")
['examples/lenet.py:LeNet']
"""
from __future__ import annotations

import os
import sys

try:  # Typer >= 0.26 vendors click
    from typer._click.shell_completion import CompletionItem, add_completion_class, split_arg_string
except ImportError:  # pragma: no cover - older Typer on top of click
    from click.shell_completion import CompletionItem, add_completion_class, split_arg_string
from typer._completion_classes import BashComplete

from modscope.load.source_names import defined_names, module_file

#: a folder that is the only match is opened, so the shell inserts it without a trailing space (this deep at most)
_OPEN_LONE_FOLDERS = 8
_SKIPPED = ("__pycache__",)


def complete_target(incomplete: str) -> list[str]:
    """Candidates for a TARGET being typed: ``file.py:Name`` / ``package.module:Name`` names, else paths.

    A path prefix matching one Python file offers its names at once (``examples/le`` -> ``examples/lenet.py:LeNet``).
    """
    source_part, sep, name = incomplete.rpartition(":")
    if sep and source_part and not _is_drive(source_part):
        source = _source_file(source_part)
        if source is None:
            return []
        owner, dot, leaf = name.rpartition(".")
        return [
            f"{source_part}:{owner}{dot}{d.name}"
            for d in defined_names(source, within=owner)
            if d.name.startswith(leaf)
        ]
    return _paths(incomplete, _OPEN_LONE_FOLDERS)


def complete_path(incomplete: str) -> list[str]:
    """Candidates for a file option (``--weights CKPT``): files and folders, no names."""
    return _paths(incomplete, _OPEN_LONE_FOLDERS, names=False)


def _paths(incomplete: str, depth: int, *, names: bool = True) -> list[str]:
    folder, slash, stem = incomplete.rpartition("/")
    directory = os.path.expanduser(folder + slash) if slash else "."
    try:
        entries = sorted(os.scandir(directory or "/"), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(stem) or entry.name in _SKIPPED or entry.name.endswith(".pyc"):
            continue
        if entry.name.startswith(".") and not stem.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        out.append(f"{folder}{slash}{entry.name}{'/' if is_dir else ''}")
    if len(out) == 1:
        (only,) = out
        if only.endswith("/") and depth > 0:
            return _paths(only, depth - 1, names=names) or out
        if names and only.endswith(".py"):
            return complete_target(only + ":") or out
    return out


def _source_file(spec: str) -> str | None:
    """The Python source a ``file.py`` or ``package.module`` before ``:`` names; looked up, never imported."""
    path = os.path.expanduser(spec)
    if path.endswith(".py") or "/" in path or os.sep in path:
        return path if os.path.isfile(path) else None
    roots = [os.getcwd()] + [p for p in sys.path if p and os.path.isdir(p)]
    return module_file(spec, roots)


def _is_drive(part: str) -> bool:
    return len(part) == 1 and part.isalpha()


class ColonAwareBash(BashComplete):
    """Typer's bash completion, with ``file.py:Name`` seen whole although bash split it at the colon."""

    def get_completion_args(self) -> tuple[list[str], str]:
        words = split_arg_string(os.environ.get("COMP_WORDS", ""))
        cword = int(os.environ.get("COMP_CWORD", "0") or 0)
        typed = words[: cword + 1]
        self._current = words[cword] if cword < len(words) else ""  # the word bash will replace
        joined: list[str] = []
        glue = False
        for word in typed:
            colons = bool(word) and set(word) == {":"}
            if joined and (colons or glue):
                joined[-1] += word
            else:
                joined.append(word)
            glue = colons
        if cword >= len(words):
            joined.append("")
        self._incomplete = joined[-1] if joined else ""
        return joined[1:-1], self._incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value
        cut = len(self._incomplete) - len(self._current)
        if cut > 0 and value.startswith(self._incomplete[:cut]):
            return value[cut:]
        return value


def enable() -> None:
    """Answer bash's completion requests with ``ColonAwareBash`` (click's registry of shells: its extension point)."""
    add_completion_class(ColonAwareBash, "bash")
