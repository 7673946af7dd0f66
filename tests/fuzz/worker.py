"""A long-lived process that runs many modscope command lines in-process, one at a time, each under an alarm.

Protocol: one JSON job per line on stdin (``argv``, ``timeout``), one JSON result per line on the original
stdout; everything the process itself writes to fds 1 and 2 (C++ warnings, a crash dump) goes to the log
file named by MODSCOPE_FUZZ_LOG, so it cannot corrupt the protocol. Run as ``python -m tests.fuzz.worker``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
import warnings


class CaseTimeout(BaseException):
    """Raised by the alarm: the case ran past its time (a BaseException, so no handler turns it into an exit)."""


_fired = {"timeout": False}


def _alarm(signum, frame):
    _fired["timeout"] = True
    raise CaseTimeout()


def parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> tuple[int, bool]:
    """(RSS now, whether the peak was reset to it): Linux resets the high-water mark on a write of "5" to
    /proc/self/clear_refs, so each case's own peak is measured without a fresh process."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") or 0, True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False


def _peak_kib(reset: bool) -> int:
    return (_status_kib("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(command, argv: list[str], timeout: float, saved_filters: list) -> dict:
    """One command line through the Typer app, as ``python -m modscope`` would run it, streams captured."""
    out, err = io.StringIO(), io.StringIO()
    warnings.filters[:] = saved_filters  # every case sees warnings as a fresh process would
    warnings._filters_mutated()
    cwd = os.getcwd()
    before, reset = _reset_peak()
    _fired["timeout"] = False
    code = None
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_PROF, timeout)  # CPU seconds: a loaded machine's waits do not count
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                command.main(args=argv, prog_name="modscope", standalone_mode=True)  # what app() calls
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                if not isinstance(done.code, (int, type(None))):
                    print(done.code, file=sys.stderr)
            except CaseTimeout:
                raise
            except BaseException:  # what the interpreter would print for an uncaught exception
                traceback.print_exc()
                code = 1
    except CaseTimeout:
        code = None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        os.chdir(cwd)
    text = out.getvalue()
    return {
        "code": None if _fired["timeout"] else code,
        "json_ok": parses_as_json(text),
        "timed_out": _fired["timeout"],
        "stdout": text[-20000:],
        "stderr": err.getvalue()[-20000:],
        "elapsed": time.perf_counter() - start,
        "rss_before": before,
        "peak": _peak_kib(reset),
    }


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(os.environ.get("MODSCOPE_FUZZ_LOG", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
    import faulthandler

    faulthandler.enable(file=sys.stderr)
    limit = int(os.environ.get("MODSCOPE_FUZZ_AS_LIMIT", 12 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped
    signal.signal(signal.SIGPROF, _alarm)

    import torch  # noqa: F401  (imported once here, not inside the first case's alarm)

    import typer

    from modscope.cli import app

    command = typer.main.get_command(app)  # built once: Typer would rebuild it on every call (~35 ms)
    saved_filters = warnings.filters[:]
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        protocol.write(json.dumps(run(command, job["argv"], job["timeout"], saved_filters)) + "\n")


if __name__ == "__main__":
    main()
