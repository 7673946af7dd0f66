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
    """The command lines to run over the catalogue: every analysis on every example where it applies."""
    commands: list[list[str]] = []
    for example in EXAMPLES:
        commands.append(["summary", example.target, "--depth", "2", *_inputs(example)])
    for name in ("chimera", "unet", "resnet18_finetune"):
        commands.append(["tree", _target(name), "--depth", "2"])
    for example in EXAMPLES:
        commands.append(["audit", example.target])
    commands.append(["shared", _target("tiny_gpt")])
    for name in ("chimera", "image_with_metadata", "unet", "tiny_gpt"):
        example = _example(name)
        commands.append(["graph", example.target, *_inputs(example), "--depth", "2", "-o", str(OUT / f"{name}.svg")])
    commands.append(["graph", _target("resnet18_finetune"), "-o", str(OUT / "resnet18_hierarchy.svg")])
    for name in ("resnet18_finetune", "param_dict_dense", "fixed_hidden_mlp"):
        example = _example(name)
        commands.append(["grads", example.target, *_inputs(example)])
    commands.append(["nan", _target("lenet"), *_inputs(_example("lenet"))])
    commands.append(["time", _target("unet"), *_inputs(_example("unet")), "--top", "8", "--repeat", "5"])
    commands.append(["summary", str(OUT / "lenet.pt")])
    commands.append(["diff", str(OUT / "lenet.pt"), str(OUT / "lenet_ddp.safetensors")])
    commands.append(["check", _target("lenet"), "--weights", str(OUT / "lenet_ddp.safetensors")])
    return commands


def _inputs(example) -> list[str]:
    args = [arg for spec in example.inputs for arg in ("--input", spec)]
    return args + [arg for name, spec in example.kwargs for arg in ("--kwarg", f"{name}={spec}")]


def _example(name: str):
    return next(e for e in EXAMPLES if e.name == name)


def _write_checkpoints() -> None:
    """Two real checkpoints of LeNet: a torch file, and a fine-tuned copy saved by DDP (``module.`` keys)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = _example("lenet").build().state_dict()
    torch.save(state, OUT / "lenet.pt")
    tuned = {f"module.{k}": v.clone() for k, v in state.items()}
    tuned["module.net.11.bias"] += 0.01
    save_file(tuned, str(OUT / "lenet_ddp.safetensors"))


def _target(name: str) -> str:
    return next(e.target for e in EXAMPLES if e.name == name)


def main() -> int:
    from modscope.cli import app

    OUT.mkdir(parents=True, exist_ok=True)
    _write_checkpoints()
    failures = []
    for argv in steps():
        print(f"\n$ modscope {shlex.join(argv)}", flush=True)
        code = _run(app, argv)
        if code not in (0, 1):  # 1 = a check found something, which the demo is there to show
            failures.append((argv, code))
    failures += _distributed_steps()
    print(f"\n{len(steps()) + 1} commands run, {len(failures)} failed; graphs and checkpoints are in {OUT}/")
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
