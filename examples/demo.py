"""The main job on the bundled examples: run modscope's CLI over every tutorial network.

Run with ``make demo`` (or ``python -m examples.demo`` inside the virtualenv). Each step is exactly what a
user would type; the commands run in-process so torch is imported once.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from examples.catalog import EXAMPLES

OUT = Path("out/demo")


def steps() -> list[list[str]]:
    """The command lines to run: a summary and an audit of every example, trees of the nested ones."""
    commands: list[list[str]] = []
    for example in EXAMPLES:
        commands.append(["summary", example.target, "--depth", "2"])
    for name in ("chimera", "unet", "resnet18_finetune"):
        commands.append(["tree", _target(name), "--depth", "2"])
    for example in EXAMPLES:
        commands.append(["audit", example.target])
    commands.append(["shared", _target("chimera")])
    return commands


def _target(name: str) -> str:
    return next(e.target for e in EXAMPLES if e.name == name)


def main() -> int:
    from modscope.cli import app

    OUT.mkdir(parents=True, exist_ok=True)
    failures = []
    for argv in steps():
        print(f"\n$ modscope {shlex.join(argv)}", flush=True)
        code = _run(app, argv)
        if code not in (0, 1):  # 1 = a check found something, which the demo is there to show
            failures.append((argv, code))
    failures += _distributed_steps()
    print(f"\n{len(steps())} commands run, {len(failures)} failed")
    for argv, code in failures:
        print(f"  exit {code}: modscope {shlex.join(argv)}")
    return 1 if failures else 0


def _run(app, argv: list[str]) -> int:
    try:  # with standalone_mode=False, click returns the exit code instead of calling sys.exit
        return int(app(args=argv, prog_name="modscope", standalone_mode=False) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - report and continue with the next example
        print(f"error: {exc}", file=sys.stderr)
        return 3


def _distributed_steps() -> list:
    """A sharded model under torchrun (2 CPU ranks, gloo): rank 0 prints one report merged over both."""
    import os
    import subprocess

    import torch

    if not torch.distributed.is_available():
        return []
    argv = ["summary", "examples/sharded.py:forgot_the_root", "--depth", "1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "modscope"]
    print(f"\n$ torchrun --standalone --nproc-per-node 2 -m modscope {shlex.join(argv)}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", LOGLEVEL="ERROR")
    proc = subprocess.Popen(launcher + argv, env=env)
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun stops its workers on SIGTERM
        proc.wait(timeout=60)
        code = 124
    return [] if code == 0 else [(["(torchrun)", *argv], code)]


if __name__ == "__main__":
    sys.exit(main())
