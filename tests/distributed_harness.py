"""Launching real multi-process jobs from tests: torchrun on free ports, with timeouts and clean teardown.

``torchrun(...)`` runs ``python -m torch.distributed.run`` in a subprocess. torchrun starts each worker in a
session of its own, so killing torchrun's process group would orphan them: on timeout the harness lists
torchrun's descendants first (from /proc), asks torchrun to stop (SIGTERM: it terminates its workers), then
kills whatever is left, by pid. A test never waits longer than its timeout and leaves no process behind.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def worker_lines(self) -> str:
        """stderr without torchrun's own log lines (W/I/E prefixed) and its failure banner."""
        keep = []
        for line in self.stderr.splitlines():
            if line[:1] in "WIE" and line[1:5].isdigit():
                continue
            keep.append(line)
        return "\n".join(keep)


def job_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",  # 2 ranks on 2 shared cores: no thread oversubscription
        COLUMNS="120",
        NO_COLOR="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        TORCH_CPP_LOG_LEVEL="ERROR",
        CUDA_VISIBLE_DEVICES="",  # the jobs are gloo on CPU, also on a machine with GPUs (fewer GPUs than ranks)
    )
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(var, None)  # a test run inside a launched job must not inherit its rendezvous
    env.update(extra or {})
    return env


def torchrun(*args: str, nproc: int = 2, timeout: float = 240, env: dict | None = None, cwd: Path = REPO) -> Result:
    """``torchrun --nproc-per-node NPROC ARGS`` on a free port; raises AssertionError on timeout.

    The port is free when chosen, but another process (a test in a parallel worker) can take it before
    torchrun listens on it: then torchrun's store fails with EADDRINUSE before any worker starts, and the
    job is launched again on a new port (at most 3 tries)."""
    for _ in range(3):
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "--max-restarts", "0",
            *args,
        ]  # fmt: skip
        result = run(command, timeout=timeout, env=job_env(env), cwd=cwd)
        if not _port_taken(result):
            break
    return result


def _port_taken(result: Result) -> bool:
    """torchrun could not listen on its rendezvous port (its store raised before starting any worker)."""
    return result.returncode != 0 and "failed to listen on any local network address" in result.stderr and (
        "EADDRINUSE" in result.stderr
    )


def run(command: list[str], *, timeout: float, env: dict, cwd: Path = REPO) -> Result:
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _stop(proc)
        raise AssertionError(
            f"timed out after {timeout:.0f}s: {' '.join(command)}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
        )
    return Result(proc.returncode, out, err)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)  # torchrun terminates its workers on SIGTERM
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for pid in children:
        _kill(pid)
    return out or "", err or ""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
