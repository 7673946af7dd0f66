"""What every fuzz run must show, as named problems per run (shared by the tests and the summary)."""
from __future__ import annotations

from tests.fuzz import commands as cmds
from tests.fuzz.cases import Case

#: peak memory a small file may add (a worker run: over its start; a process: over a valid file's process)
RSS_LIMIT_KIB = 256 << 10
CHECKS = {
    "payload": "a payload created its marker file",
    "traceback": "a traceback on stderr",
    "crash": "the process died of a signal",
    "hang": "ran past its time limit",
    "exit": "unexpected exit code",
    "lines": "exit 2 without exactly one 'modscope: error:' line",
    "json": "--json printed something that is not one JSON document",
    "rss": "peak RSS over the bound for a small file",
}


def problems(run, case: Case, process_base_kib: int | None = None, process_peak_kib: int | None = None) -> list[str]:
    """The CHECKS keys ``run`` fails."""
    found = []
    if run.marker:
        found.append("payload")
    if "Traceback" in run.stderr:
        found.append("traceback")
    if run.signal:
        found.append("crash")
    if run.timed_out:
        found.append("hang")
    finished = not (run.timed_out or run.signal)
    if finished and run.code not in cmds.allowed(run.command, case):
        found.append("exit")
    lines = run.stderr.strip().splitlines()
    if run.code == 2 and (len(lines) != 1 or not lines[0].startswith("modscope: error:")):
        found.append("lines")
    if cmds.is_json(run.command) and run.code in (0, 1) and not run.json_ok:
        found.append("json")
    if case.bounded and (run.rss_excess_kib or 0) > RSS_LIMIT_KIB:
        found.append("rss")
    elif case.bounded and process_peak_kib is not None and process_base_kib is not None:
        if process_peak_kib - process_base_kib > RSS_LIMIT_KIB:
            found.append("rss")
    return found


def explain(run, case: Case, problem: str) -> str:
    """One line for a failing run: command, case, how it ended, its first stderr line, and the rule."""
    extra = ""
    if problem == "exit":
        extra = f" (allowed {sorted(cmds.allowed(run.command, case))})"
    elif problem == "lines":
        extra = f" ({len(run.stderr.strip().splitlines())} lines)"
    elif problem == "rss" and run.rss_excess_kib:
        extra = f" (+{run.rss_excess_kib >> 10} MiB)"
    return run.describe() + extra
