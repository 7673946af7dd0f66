"""Timing and table helpers shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def best_of(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A GitHub-flavoured markdown table, so results paste straight into docs/benchmarks.md."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


PEAK = """
import atexit
def _peak():
    with open("/proc/self/status") as f:
        print("VmHWM", next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
atexit.register(_peak)
"""


def run(code: str, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of ``python -c code args`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK + code, *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"benchmark step failed: {proc.stderr[-500:]}")
    lines = proc.stdout.strip().splitlines()
    peak = next(int(line.split()[1]) for line in reversed(lines) if line.startswith("VmHWM"))
    out = "\n".join(line for line in lines if not line.startswith("VmHWM"))
    return wall, peak / 1024, out
