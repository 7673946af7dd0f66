"""Benchmark of the forward-pass analysis; prints markdown tables (recorded in docs/benchmarks.md).

    python -m bench.forward            # everything (a few minutes); also run by `make bench`
    python -m bench.forward --quick    # fewer rounds

1. torchvision zoo, batch 1, CPU, warm, same input for every contender: a plain forward, the forward under
   FlopCounterMode alone, torchinfo.summary, modscope's forward pass with and without FLOPs, and the whole
   default ``modscope.summary(model, inputs=x)`` (static part, shapes + FLOPs, memory estimate).
   Targets: modscope with FLOPs <= 1.2x FlopCounterMode; without FLOPs <= torchinfo; the whole call <= 1.2x
   FlopCounterMode.
2. A 59B-parameter decoder (bench/decoder.py) and a 59B ``nn.TransformerEncoder`` on the meta device, batch 1,
   sequence 4096: torchinfo's shapes-only meta pass vs modscope's shapes + FLOPs and vs the whole default
   ``modscope.summary`` (target <= 1.0x torchinfo); and the peak RSS of the real command line
   ``modscope summary bench/decoder.py:decoder_59b --device meta ...`` (target < 700 MB).
3. Small torchvision models at 64x64 (resnet18, mobilenet_v3_small, vit_b_16): the whole
   ``modscope.summary(model, inputs=x, device="meta")`` call against the same call on CPU, measured in the
   same run. Target: meta <= 1.0x CPU (meta computes nothing, so it should never cost more).
(The 50,000-module static summary is measured by bench/static.py.)

Times are CPU time of this process (``time.process_time``) with one torch thread, the minimum over
interleaved rounds: on a shared machine that is far steadier than wall time, and for one thread it is what
wall time would be on an idle machine.
"""
from __future__ import annotations

import argparse
import gc
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import modscope  # noqa: E402
from bench.common import run  # noqa: E402
from modscope.api.forward import analyse_forward  # noqa: E402

ZOO = ("resnet50", "vit_b_16", "efficientnet_b0", "convnext_tiny")
DECODER_CMD = [
    sys.executable, "-m", "modscope", "summary", "bench/decoder.py:decoder_59b",
    "--device", "meta", "--input", "1,4096:int64[0,32000)", "--json",
]


def best_of(contenders: dict, rounds: int) -> dict[str, float]:
    """Minimum CPU seconds of each callable over ``rounds`` interleaved rounds (after one warm-up each).

    Each call starts right after a full garbage collection: with torch imported a full collection walks
    ~340,000 objects (~0.15 s), and otherwise lands on whichever contender happens to cross the threshold.
    """
    for fn in contenders.values():
        fn()
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            gc.collect()
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return best


def zoo(rounds: int) -> list[str]:
    import torchinfo
    import torchvision

    lines = [
        "| model | plain | FlopCounterMode | torchinfo | modscope, FLOPs | modscope, no FLOPs | "
        "FLOPs / FlopCounterMode (<= 1.2) | no FLOPs / torchinfo (<= 1.0) | whole summary() | "
        "whole summary() / FlopCounterMode (<= 1.2) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ZOO:
        model = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        static = modscope.summary(model)
        kwargs = dict(parameters=static.parameters, buffers=static.buffers, memory=False)
        t = best_of(
            {
                **_baselines(model, x),
                "torchinfo": lambda: torchinfo.summary(model, input_data=x, verbose=0),
                "flops": lambda: analyse_forward(model, x, **kwargs),
                "noflops": lambda: analyse_forward(model, x, flops=False, **kwargs),
                # what the user calls: static summary, shapes + FLOPs, memory estimate, all defaults
                "whole": lambda: modscope.summary(model, inputs=x),
            },
            rounds,
        )
        lines.append(
            f"| {name} | {_ms(t['plain'])} | {_ms(t['fcm'])} ({t['fcm'] / t['plain']:.2f}x) | "
            f"{_ms(t['torchinfo'])} ({t['torchinfo'] / t['plain']:.2f}x) | {_ms(t['flops'])} | {_ms(t['noflops'])} | "
            f"**{t['flops'] / t['fcm']:.2f}** | **{t['noflops'] / t['torchinfo']:.2f}** | {_ms(t['whole'])} | "
            f"**{t['whole'] / t['fcm']:.2f}** |"
        )
        print(f"  {name} done", file=sys.stderr, flush=True)
    return lines


def _baselines(model, x) -> dict:
    """The plain forward and the forward under FlopCounterMode alone, both under no_grad."""
    from torch.utils.flop_counter import FlopCounterMode

    def plain():
        with torch.no_grad():
            model(x)

    def flop_counter():
        with torch.no_grad(), FlopCounterMode(display=False):
            model(x)

    return {"plain": plain, "fcm": flop_counter}


def decoder(rounds: int) -> list[str]:
    import torchinfo

    from bench.decoder import decoder_59b

    started = time.process_time()
    with torch.device("meta"):
        model = decoder_59b()
    built = time.process_time() - started
    ids = torch.randint(0, 32000, (1, 4096), device="meta")
    params = sum(p.numel() for p in model.parameters())
    t = best_of(
        {
            **_baselines(model, ids),
            "torchinfo": lambda: torchinfo.summary(model, input_data=ids, device="meta", verbose=0),
            "shapes_flops": lambda: analyse_forward(model, ids, parameters=(), buffers=(), device="meta", memory=False),
            "shapes": lambda: analyse_forward(
                model, ids, parameters=(), buffers=(), device="meta", memory=False, flops=False
            ),
        },
        rounds,
    )
    summary = best_of({"s": lambda: modscope.summary(model, inputs=ids, device="meta")}, max(1, rounds // 2))["s"]
    encoder = _encoder_59b(max(1, rounds // 2))
    rss_mb, wall = _peak_rss(DECODER_CMD)
    torch_mb, _ = _peak_rss([sys.executable, "-c", "import torch"])
    torch_inside_mb = run("import torch")[1]  # peak read inside the process (VmHWM) as it ends
    kernels_mb = run(TORCH_META_KERNELS)[1]
    return [
        f"Decoder: {params / 1e9:.1f}B parameters, built on meta in {built:.2f} s.",
        "",
        "| what | time |",
        "| --- | --- |",
        f"| plain forward, meta, no_grad (for scale) | {t['plain']:.2f} s |",
        f"| the same under FlopCounterMode alone (for scale) | {t['fcm']:.2f} s |",
        f"| torchinfo.summary, meta, shapes only | {t['torchinfo']:.2f} s |",
        f"| modscope forward pass, meta, shapes + FLOPs | {t['shapes_flops']:.2f} s "
        f"(**{t['shapes_flops'] / t['torchinfo']:.2f}x** torchinfo) |",
        f"| modscope forward pass, meta, shapes only | {t['shapes']:.2f} s |",
        f"| modscope.summary, the whole default call: static + shapes + FLOPs + memory (second, autograd pass) | "
        f"{summary:.2f} s (**{summary / t['torchinfo']:.2f}x** torchinfo, target <= 1.0) |",
        f"| the same for `nn.TransformerEncoder` (80 x `TransformerEncoderLayer(8192, 64, 28672)`, "
        f"{encoder['params'] / 1e9:.1f}B, meta, 1x4096x8192): torchinfo.summary | {encoder['torchinfo']:.2f} s |",
        f"| ... modscope.summary, whole default call | {encoder['whole']:.2f} s "
        f"(**{encoder['whole'] / encoder['torchinfo']:.2f}x** torchinfo, target <= 1.0) |",
        f"| `{' '.join(['modscope', *DECODER_CMD[3:]])}`: peak RSS of the whole process | **{rss_mb:.0f} MB** "
        f"(target < 700), {wall:.1f} s wall |",
        f"| same method, `python -c 'import torch'` (includes torch's own teardown, which the CLI skips) | "
        f"{torch_mb:.0f} MB |",
        f"| `import torch`, peak inside the process (the ~510 MB the target cites) | {torch_inside_mb:.0f} MB |",
        f"| import torch + one meta layer_norm (loads torch's Python meta kernels), inside the process | "
        f"{kernels_mb:.0f} MB |",
    ]


def _encoder_59b(rounds: int) -> dict:
    """torchinfo vs the whole modscope.summary on the 59B ``nn.TransformerEncoder`` the issue names, on meta."""
    import torch.nn as nn
    import torchinfo

    with torch.device("meta"):
        layer = nn.TransformerEncoderLayer(d_model=8192, nhead=64, dim_feedforward=28672, batch_first=True)
        model = nn.TransformerEncoder(layer, num_layers=80, enable_nested_tensor=False)
    x = torch.empty(1, 4096, 8192, device="meta")
    t = best_of(
        {
            "torchinfo": lambda: torchinfo.summary(model, input_data=x, device="meta", verbose=0),
            "whole": lambda: modscope.summary(model, inputs=x, device="meta"),
        },
        rounds,
    )
    return {**t, "params": sum(p.numel() for p in model.parameters())}


SMALL = ("resnet18", "mobilenet_v3_small", "vit_b_16")


def meta_vs_cpu(rounds: int) -> list[str]:
    """The whole summary() call on meta vs on CPU, for small models where torch's Python meta kernels dominate."""
    import torchvision

    lines = [
        "| model (1x3x64x64) | summary(), CPU | summary(), meta | meta / CPU (<= 1.0) |",
        "| --- | --- | --- | --- |",
    ]
    ratios = []
    for name in SMALL:
        options = {"image_size": 64} if name.startswith("vit") else {}
        model = getattr(torchvision.models, name)(weights=None, **options).eval()
        x = torch.randn(1, 3, 64, 64)
        t = best_of(
            {
                "cpu": lambda: modscope.summary(model, inputs=x),
                "meta": lambda: modscope.summary(model, inputs=x, device="meta"),
            },
            rounds,
        )
        ratios.append(t["meta"] / t["cpu"])
        lines.append(f"| {name} | {_ms(t['cpu'])} | {_ms(t['meta'])} | **{ratios[-1]:.2f}** |")
        print(f"  {name} done", file=sys.stderr, flush=True)
    lines.append(f"| median | | | **{sorted(ratios)[len(ratios) // 2]:.2f}** |")
    return lines


TORCH_META_KERNELS = (
    "import torch, torch.nn.functional as F; F.layer_norm(torch.empty(2, 8, device='meta'), (8,)); "
    "torch.empty(8, 8, device='meta') @ torch.empty(8, 8, device='meta')"
)


def _peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Peak resident memory (MB) of ``cmd`` run as a child of a fresh Python, so nothing else is counted."""
    probe = (
        "import resource, subprocess, sys, time; t = time.time(); "
        f"r = subprocess.run({cmd!r}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
        "w = time.time() - t; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, w, r.returncode, r.stderr[-500:])"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    kib, wall, code, *err = out.split(" ", 3)
    if code != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed: {' '.join(err)}")
    return int(kib) / 1024, float(wall)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--only", choices=("zoo", "decoder", "meta"), help="run one part")
    args = parser.parse_args(argv if argv is not None else [])
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 7
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, 1 torch thread\n")
    parts = {"zoo": lambda: zoo(rounds), "decoder": lambda: decoder(rounds), "meta": lambda: meta_vs_cpu(rounds)}
    for key, part in parts.items():
        if args.only in (None, key):
            print("\n".join(part()) + "\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
