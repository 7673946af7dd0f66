"""Drives the fuzz runs: long-lived in-process workers (many cases each, restarted after a crash, a hard hang
or a memory excess) and true one-process-per-run cases (measured with os.wait4), and collects the results."""
from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.fuzz import commands as cmds
from tests.fuzz.cases import Case
from tests.fuzz.worker import parses_as_json

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 10.0  # past the in-process alarm, the worker is killed (a hang in C code the alarm cannot stop)
#: The time limits are CPU seconds (on 2 shared cores at load 12 a run that needs 3 CPU s takes 60 s of wall
#: time); a run that waits without using CPU (a blocking read) is stopped after WALL_FACTOR x the limit.
WALL_FACTOR = 12


@dataclass
class Run:
    """One command line over one case, and everything observed about it."""

    case: str
    command: str
    argv: list[str]
    mode: str  # "worker" (in-process) or "process" (its own python -m modscope)
    code: int | None = None  # None: it did not finish
    stdout: str = ""
    stderr: str = ""
    elapsed: float = 0.0
    timed_out: bool = False
    signal: int | None = None  # the process died of this signal
    rss_excess_kib: int | None = None  # worker: the run's peak RSS above its RSS at the start
    marker: bool = False  # the case's payload ran
    json_ok: bool | None = None  # the whole stdout parsed as JSON (stdout itself is kept truncated)

    def first_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[0][:200] if lines else ""

    def describe(self) -> str:
        status = "hang" if self.timed_out else f"signal {self.signal}" if self.signal else f"exit {self.code}"
        return f"{self.command} {self.case} [{self.mode}]: {status}: {self.first_line()!r}"


def child_env(log: str | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", PYTHONPATH=path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode written next to user files must show
    if log:
        env["MODSCOPE_FUZZ_LOG"] = log
    return env


class Worker:
    """One ``python -m tests.fuzz.worker`` process, warmed up (modscope's modules imported) by a few runs."""

    def __init__(self, warmup: list[list[str]], timeout: float):
        self.log = tempfile.NamedTemporaryFile(prefix="modscope-fuzz-", suffix=".log", delete=False).name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"], cwd=REPO, env=child_env(self.log),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        ready = self._receive(600)  # importing torch: minutes of wall time on a loaded machine
        if not ready:
            raise RuntimeError(f"fuzz worker did not start: {self.log_tail()}")
        for argv in warmup:
            self.ask(argv, timeout)

    def _receive(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, argv: list[str], timeout: float) -> dict | None:
        """The worker's result, or None when it died or stopped answering."""
        try:
            self.proc.stdin.write(json.dumps({"argv": argv, "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        return self._receive(WALL_FACTOR * timeout + GRACE_S)

    def log_tail(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """End the worker (killed if still running); its return code (negative: the signal that killed it)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        os.unlink(self.log)
        return code


def _check_marker(case: Case, run: Run) -> None:
    if case.marker and os.path.exists(case.marker):
        run.marker = True
        os.remove(case.marker)


def _worker_loop(jobs: queue.Queue, results: list, lock, commands: dict, model: str, warmup, timeout):
    worker = None
    while True:
        try:
            case = jobs.get_nowait()
        except queue.Empty:
            break
        for command, template in commands.items():
            worker = worker or Worker(warmup, timeout)
            run = Run(case.name, command, cmds.argv(template, case, model), "worker")
            answer = worker.ask(run.argv, timeout)
            if answer is None:  # died (a crash) or stopped answering (a hang the alarm could not break)
                alive = worker.proc.poll() is None
                if alive:
                    worker.proc.kill()
                tail = worker.log_tail().strip().splitlines()
                code = worker.stop()
                run.timed_out = alive
                run.signal = -code if code is not None and code < 0 else None
                run.code = None if alive or run.signal else code
                run.stderr = "" if alive else f"(worker ended with {code}) " + " / ".join(
                    line for line in tail if line.startswith("Fatal Python error")
                )
                worker = None
            else:
                run.code, run.timed_out = answer["code"], answer["timed_out"]
                run.stdout, run.stderr, run.elapsed = answer["stdout"], answer["stderr"], answer["elapsed"]
                run.json_ok = answer["json_ok"]
                if case.bounded:
                    run.rss_excess_kib = max(0, answer["peak"] - answer["rss_before"])
                if run.timed_out:  # the alarm may have landed anywhere (in a lazy import of torch's, say):
                    worker.stop()  # the next case gets a clean process
                    worker = None
            _check_marker(case, run)
            with lock:
                results.append(run)
    if worker is not None:
        worker.stop()


def run_matrix(cases: list[Case], commands: dict, model: str, *, workers: int, timeout: float,
               warmup: list[list[str]]) -> list[Run]:  # fmt: skip
    """Every command over every case, spread over ``workers`` in-process workers (each case on one worker).

    A worker that crashes, stops answering or had a run stopped by its alarm is replaced (the run is
    reported): a half-finished import or lock must not poison the cases after it."""
    jobs: queue.Queue = queue.Queue()
    for case in sorted(cases, key=lambda c: c.kind != "valid"):
        jobs.put(case)
    results: list[Run] = []
    lock = threading.Lock()
    args = (jobs, results, lock, commands, model, warmup, timeout)
    threads = [threading.Thread(target=_worker_loop, args=args) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_process(case: Case, command: str, template: list[str], model: str, timeout: float) -> tuple[Run, int]:
    """One true ``python -m modscope`` run, its peak RSS from os.wait4; returns (run, peak KiB)."""
    run = Run(case.name, command, cmds.argv(template, case, model), "process")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "modscope", *run.argv], cwd=REPO, env=child_env(),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=_no_core)  # fmt: skip
        status, usage = None, None
        while status is None:
            pid, wait_status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = wait_status, rusage
            elif not run.timed_out and (
                _cpu_s(proc.pid) > timeout or time.perf_counter() - start > WALL_FACTOR * timeout
            ):
                os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): it would reap the child, and its rusage
                run.timed_out = True
            else:
                time.sleep(0.02)
        proc.returncode = 0  # reaped here; keep Popen from waiting again
        run.elapsed = time.perf_counter() - start
        if os.WIFSIGNALED(status) and not run.timed_out:
            run.signal = os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            run.code = os.WEXITSTATUS(status)
        for stream, attr in ((out, "stdout"), (err, "stderr")):
            stream.seek(0)
            setattr(run, attr, stream.read().decode(errors="replace"))
        run.json_ok = parses_as_json(run.stdout)
        run.stdout, run.stderr = run.stdout[-20000:], run.stderr[-20000:]
    _check_marker(case, run)
    return run, usage.ru_maxrss


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running child (Linux /proc; 0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _no_core() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def as_record(run: Run) -> dict:
    return asdict(run)
