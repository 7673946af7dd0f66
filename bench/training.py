"""Training-time analyses: what watching gradients, timing layers and tracing NaN/Inf cost.

Run: python -m bench.training                 (a few minutes on two CPU cores)
     python -m bench.training --device cuda   (the same on a GPU: CUDA events, batch 32)

On CPU, torch runs on one thread and steps are measured in process CPU time as well as wall time: on a
machine shared with other jobs, CPU time of a single-threaded step is what stays comparable between variants.
On CUDA, steps are wall time between two ``torch.cuda.synchronize()`` calls, and overheads are of wall time.

1. watch_gradients: a resnet50 training step (CPU, batch 8), watched vs unwatched, alternating (target < 10%).
2. time_layers: forward (and backward) with per-layer timing hooks vs the same pass without hooks.
3. detect_nonfinite vs torch.autograd.detect_anomaly on the same training step, and the finiteness check
   it is built on (aminmax) vs torch.isfinite(t).all().
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings

import torch
import torch.nn as nn

from bench.common import print_table

BATCH = {"cpu": 8, "cuda": 32}


def _resnet50():
    import torchvision

    return torchvision.models.resnet50()


def _mlp(depth: int = 100, width: int = 64) -> nn.Module:
    """Many small layers: where per-module hook costs show most."""
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _transformer() -> nn.Module:
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
            self.head = nn.Linear(256, 10)

        def forward(self, x):
            return self.head(self.encoder(x).mean(1))

    return Classifier()


def _data(model_name: str, device: str):
    gen = torch.Generator().manual_seed(0)
    n = BATCH[device]
    if model_name == "tokens":
        x, y = torch.randn(n, 64, 256, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    elif model_name == "resnet50":
        x, y = torch.randn(n, 3, 224, 224, generator=gen), torch.randint(0, 1000, (n,), generator=gen)
    else:
        x, y = torch.randn(n, 64, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    return x.to(device), y.to(device)


def _step(model, opt, x, y) -> None:
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_timed(fn, device: str = "cpu") -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) for one call; on CUDA, the wall time includes the GPU work."""
    if device == "cuda":
        torch.cuda.synchronize()
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.process_time() - cpu, time.perf_counter() - wall


def _medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)


def _cost(samples: list[tuple[float, float]], device: str) -> float:
    """What overheads are measured in: CPU time on CPU (steady on a shared machine), wall time on CUDA."""
    cpu, wall = _medians(samples)
    return cpu if device == "cpu" else wall


def _where(device: str) -> str:
    return "CPU (1 thread)" if device == "cpu" else f"CUDA ({torch.cuda.get_device_name()}), wall time"


def watch_overhead(device: str, rounds: int = 6) -> None:
    import modscope

    rows = []
    for name, build, data in (("resnet50", _resnet50, "resnet50"), ("mlp 100x Linear(64)", _mlp, "mlp")):
        model = build().to(device)
        x, y = _data(data, device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        _step(model, opt, x, y)  # warm-up: allocations, momentum buffers
        variants = {
            "unwatched": lambda: contextlib.nullcontext(),
            "watched, step = backward": lambda: modscope.watch_gradients(model),
            "watched, step = optimizer.step()": lambda: modscope.watch_gradients(model, optimizer=opt),
        }
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for _ in range(rounds):  # variants take turns, so slow drifts of a shared machine hit all alike
            for variant, make in variants.items():
                with make() as watch:  # entering and leaving are outside the timed step
                    times[variant].append(_cpu_timed(lambda: _step(model, opt, x, y), device))
                if watch is not None:
                    report_seconds = _timed(watch.report)
        base = _cost(times["unwatched"], device)
        for variant, samples in times.items():
            cpu, wall = _medians(samples)
            rows.append([name, variant, cpu * 1e3, wall * 1e3,
                         "" if variant == "unwatched" else f"{(_cost(samples, device) / base - 1) * 100:+.1f}%"])
        rows.append([name, "watch.report() after one step", "", report_seconds * 1e3, ""])
    print_table(
        f"watch_gradients: one SGD training step, {_where(device)}, batch {BATCH[device]}, median of {rounds} "
        "alternating rounds (target: under +10%)",
        ["model", "variant", "CPU ms per step", "wall ms", f"overhead ({'CPU' if device == 'cpu' else 'wall'})"],
        rows,
    )


def timing_overhead(device: str, repeat: int = 5) -> None:
    import modscope

    rows = []
    clocks = ("auto", "events") if device == "cuda" else ("auto",)
    for name, build, data in (("resnet50", _resnet50, "resnet50"), ("mlp 100x Linear(64)", _mlp, "mlp")):
        model = build()
        x, _ = _data(data, "cpu")
        for clock in clocks:
            start = time.perf_counter()
            report = modscope.time_layers(model, x, backward=True, warmup=2, repeat=repeat, device=device,
                                          clock=clock)
            total = time.perf_counter() - start
            for label, p in (("forward", report.forward), ("backward", report.backward)):
                rows.append([name, report.clock, label, p.bare.median / 1e6, p.hooked.median / 1e6,
                             f"{(p.hooked.median / p.bare.median - 1) * 100:+.1f}%", f"{p.coverage:.0%}",
                             f"{p.layer_sum / p.hooked.median:.0%}", p.queued_ahead])
            modules = len(report.layers)
            rows.append([name, report.clock, f"whole time_layers call ({modules} modules, {2 * (2 + repeat)} "
                         "iterations)", "", total * 1e3, "", "", "", ""])
    print_table(
        f"time_layers: pass times without hooks vs while timing every module, on {report.device}, "
        f"batch {BATCH[device]}, median of {repeat}",
        ["model", "clock", "pass", "unhooked ms", "hooked ms", "overhead", "per-layer sum / unhooked",
         "per-layer sum / hooked", "queued ahead"],
        rows,
    )


def nan_tracing(device: str, rounds: int = 5) -> None:
    import modscope

    def anomaly():
        return torch.autograd.detect_anomaly(check_nan=True)

    rows = []
    models = (("resnet50", _resnet50, "resnet50"), ("mlp 100x Linear(64)", _mlp, "mlp"),
              ("transformer 6x256", _transformer, "tokens"))
    for name, build, data in models:
        model = build().to(device)
        x, y = _data(data, device)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every round sees the same weights
        _step(model, opt, x, y)
        variants = {
            "plain": contextlib.nullcontext,
            "modscope.detect_nonfinite": lambda: modscope.detect_nonfinite(model),
            "torch.autograd.detect_anomaly": anomaly,
        }
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # detect_anomaly warns that it slows things down
            for _ in range(rounds):
                for variant, make in variants.items():
                    with make():
                        times[variant].append(_cpu_timed(lambda: _step(model, opt, x, y), device))
        base = _cost(times["plain"], device)
        ours = _cost(times["modscope.detect_nonfinite"], device)
        for variant, samples in times.items():
            cpu, wall = _medians(samples)
            cost = _cost(samples, device)
            rows.append([name, variant, cpu * 1e3, wall * 1e3, f"{(cost / base - 1) * 100:+.0f}%",
                         "" if variant == "plain" else f"{(cost - base) / (ours - base):.1f}x" if ours > base else "-"])
    print_table(
        f"NaN/Inf tracing: one training step (forward + backward), {_where(device)}, batch {BATCH[device]}, "
        f"median of {rounds} alternating rounds",
        ["model", "variant", "CPU ms per step", "wall ms", "overhead", "overhead vs detect_nonfinite's"],
        rows,
    )


def finiteness_checks(device: str, repeat: int = 20) -> None:
    """Why detect_nonfinite uses aminmax: exact (NaN propagates, +-Inf is the max/min) and one reduction."""
    rows = []
    for shape in ((8, 256, 56, 56), (8, 2048, 7, 7), (2048, 512)):
        t = torch.randn(shape, device=device)
        checks = {
            "torch.isfinite(t).all()": lambda: torch.isfinite(t).all(),
            "torch.aminmax(t)": lambda: torch.aminmax(t),
        }
        times = {}
        for name, fn in checks.items():
            fn()
            times[name] = statistics.median(_cpu_timed(fn, device)[1] for _ in range(repeat))
        rows.append(["x".join(map(str, shape)), *(v * 1e3 for v in times.values()),
                     times["torch.isfinite(t).all()"] / times["torch.aminmax(t)"]])
    print_table(
        f"One finiteness check on {device}, median of {repeat} (ms, wall{', synchronised' if device == 'cuda' else ''})",
        ["tensor", "isfinite().all() ms", "aminmax ms", "ratio"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    benches = {"watch": watch_overhead, "timing": timing_overhead, "nan": nan_tracing, "finite": finiteness_checks}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", choices=sorted(benches), action="append", help="run only these (repeatable)")
    options = parser.parse_args(argv if argv is not None else [])
    device = options.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.training --device cuda: no CUDA device is available here")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    for name in options.only or benches:
        benches[name](device)


if __name__ == "__main__":
    main(sys.argv[1:])
