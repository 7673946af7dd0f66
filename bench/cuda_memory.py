"""The memory estimate (``modscope.summary(..., inputs=...)``, measured on meta) against what CUDA allocates.

For each model: inference (eval, no_grad, one forward) and one AdamW training step (forward, mean loss,
backward, ``optimizer.step()``, ``foreach`` off so the step allocates no temporary copies of every
parameter), measured with ``torch.cuda.max_memory_allocated`` from a clean allocator with only the inputs
resident. Run: ``python -m bench.cuda_memory`` on a machine with a GPU.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn

from bench.common import print_table

MB = 2**20


def _models():
    import torchvision

    yield "resnet50, batch 32", torchvision.models.resnet50(), torch.randn(32, 3, 224, 224)
    yield "vit_b_16, batch 16", torchvision.models.vit_b_16(), torch.randn(16, 3, 224, 224)
    yield "mobilenet_v3_small, batch 64", torchvision.models.mobilenet_v3_small(), torch.randn(64, 3, 224, 224)
    layer = nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True, dropout=0.0)
    yield "TransformerEncoder 6x512, 16x512 tokens", nn.TransformerEncoder(layer, 6, enable_nested_tensor=False), \
        torch.randn(16, 512, 512)


def _peak(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main() -> None:
    import modscope

    if not torch.cuda.is_available():
        sys.exit("bench.cuda_memory: no CUDA device is available here")
    rows = []
    for name, model, x in _models():
        estimate = modscope.summary(model, inputs=x, device="meta").forward.memory
        gpu_model, gpu_x = model.cuda(), x.cuda()

        def inference():
            gpu_model.eval()
            with torch.no_grad():
                gpu_model(gpu_x)

        def training():
            gpu_model.train()
            opt = torch.optim.AdamW(gpu_model.parameters(), foreach=False)
            gpu_model(gpu_x).float().mean().backward()
            opt.step()

        resident = sum(t.numel() * t.element_size() for t in (*gpu_model.parameters(), *gpu_model.buffers()))
        inference_peak = _peak(inference) + resident  # params and buffers were already there
        training_peak = _peak(training) + resident
        for p in gpu_model.parameters():
            p.grad = None
        rows.append([name, "inference", estimate.inference_total / MB, inference_peak / MB,
                     f"{estimate.inference_total / inference_peak:.2f}"])
        rows.append([name, "training step (AdamW)", estimate.training_total / MB, training_peak / MB,
                     f"{estimate.training_total / training_peak:.2f}"])
        model.cpu()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print_table("Memory estimate (meta) vs torch.cuda.max_memory_allocated",
                ["model", "what", "estimate MiB", "CUDA peak MiB", "estimate / peak"], rows)


if __name__ == "__main__":
    main()
