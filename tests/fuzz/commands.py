"""The reading commands the fuzz cases go through, and the exit codes each case allows for each."""
from __future__ import annotations

from tests.fuzz.cases import BAD, EITHER, Case

#: command name -> argv template: {P} the case, {R} its family's valid reference, {M} the fuzz model.
DEFAULT = {
    "summary": ["summary", "{P}"],
    "summary-json": ["summary", "{P}", "--tensors", "--json"],
    "tree": ["tree", "{P}"],
    "keys-only": ["diff", "{P}", "{P}", "--keys-only"],
    "diff-self": ["diff", "{P}", "{P}"],
    "diff-ref": ["diff", "{R}", "{P}"],
    "check": ["check", "{M}", "--weights", "{P}"],
    "weights": ["summary", "{M}", "--weights", "{P}"],
    "audit": ["audit", "{P}"],
}
#: more commands for MODSCOPE_FUZZ=full.
FULL = DEFAULT | {
    "tree-json": ["tree", "{P}", "--json"],
    "diff-ref-keys": ["diff", "{R}", "{P}", "--keys-only"],
    "diff-rev": ["diff", "{P}", "{R}", "--json"],
    "shared": ["shared", "{P}"],
    "nan": ["nan", "{M}", "--weights", "{P}", "--input", "2,4"],
    "grads": ["grads", "{M}", "--weights", "{P}", "--input", "2,4"],
    "time": ["time", "{M}", "--weights", "{P}", "--input", "2,4", "--repeat", "1", "--warmup", "0"],
}


def argv(template: list[str], case: Case, model: str) -> list[str]:
    values = {"{P}": case.path, "{R}": case.reference, "{M}": model}
    return [values.get(part, part) for part in template]


def allowed(command: str, case: Case) -> set[int]:
    """The exit codes ``case`` allows for ``command`` (2 always with exactly one ``modscope: error:`` line)."""
    if command in case.expect:
        return case.expect[command]
    if case.kind == BAD:
        return {2}
    if case.kind == EITHER:
        return {0, 1, 2}
    codes = _valid(command, case)
    return codes | {2} if case.refusable else codes


def _valid(command: str, case: Case) -> set[int]:
    if command in ("summary", "summary-json", "tree", "tree-json", "keys-only", "diff-self"):
        return {0}
    if command in ("diff-ref", "diff-rev", "diff-ref-keys"):
        return {0} if case.same else {0, 1}
    if command == "check":
        return {0} if case.fits else {1}
    if command in ("weights", "time"):
        return {0} if case.fits else {2}
    if command in ("nan", "grads"):
        return {0, 1} if case.fits else {2}
    return {0, 1, 2}  # audit/shared of a state dict: not a model, refused in one line


def is_json(command: str) -> bool:
    return "--json" in FULL[command]
