"""Static summary speed: modscope vs torchinfo (no input) on the same models, and scaling with module count.

Run: python -m bench.static
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import torch.nn as nn

from bench.common import best_of, print_table

MODELS = ["resnet50", "vit_b_16", "efficientnet_b0", "convnext_tiny", "regnet_y_16gf"]


def zoo() -> None:
    import torchinfo
    import torchvision

    import modscope

    rows = []
    for name in MODELS:
        model = torchvision.models.get_model(name, weights=None)
        t_info = best_of(lambda: torchinfo.summary(model, verbose=0), repeat=3)
        t_ms = best_of(lambda: modscope.summary(model), repeat=3)
        t_meta = best_of(lambda: modscope.summary(model, check_values=False), repeat=3)
        rows.append([name, f"{len(list(model.modules()))}", t_info * 1e3, t_meta * 1e3, t_meta / t_info,
                     t_ms * 1e3, t_ms / t_info])
    print_table(
        "Static summary (no forward pass), median of 3, warm. 'structure' skips the NaN/Inf scan of the "
        "weights (torchinfo does not read values); 'full' is the default",
        ["model", "modules", "torchinfo ms", "structure ms", "structure / torchinfo", "full ms",
         "full / torchinfo"],
        rows,
    )


def scaling() -> None:
    import modscope

    rows = []
    for blocks in (1_000, 5_000, 16_667):
        model = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(blocks)])
        modules = 1 + 3 * blocks
        t = best_of(lambda: modscope.summary(model), repeat=3)
        rows.append([modules, t, t / modules * 1e6])
    deep = nn.Sequential()
    inner = deep
    for _ in range(2000):
        child = nn.Sequential(nn.Linear(1, 1))
        inner.append(child)
        inner = child
    t = best_of(lambda: modscope.summary(deep), repeat=3)
    rows.append(["4,001 (2,000-deep chain)", t, t / 4001 * 1e6])
    print_table(
        "Static summary scaling with module count (target: 50,000 modules under 3 s)",
        ["modules", "seconds", "µs per module"],
        rows,
    )


def startup() -> None:
    env = dict(os.environ, COLUMNS="100")

    def run(args):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
        return time.perf_counter() - start

    bare = min(run(["-c", "pass"]) for _ in range(3))
    help_ = min(run(["-m", "modscope", "--help"]) for _ in range(3))
    torch_ = min(run(["-c", "import torch"]) for _ in range(3))
    print_table(
        "CLI start-up (best of 3; target: --help well under 0.5 s)",
        ["command", "seconds", "vs bare python"],
        [["python -c pass", bare, 1.0], ["modscope --help", help_, help_ / bare],
         ["python -c 'import torch' (for scale)", torch_, torch_ / bare]],
    )


def main() -> None:
    startup()
    zoo()
    scaling()


if __name__ == "__main__":
    main()
