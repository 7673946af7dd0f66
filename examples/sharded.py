"""Sharded models for ``torchrun``: factories that build a model and shard it with FSDP2 / DTensor.

Each factory initialises the process group only if nobody has (``modscope`` does it under a launcher), then
builds and shards the model on a device mesh over every rank. Run them with::

    torchrun --nproc-per-node 2 -m modscope summary examples/sharded.py:fsdp_mlp
    torchrun --nproc-per-node 2 -m modscope summary examples/sharded.py:tensor_parallel_mlp --tensors
    torchrun --nproc-per-node 2 -m modscope audit examples/sharded.py:forgot_the_root --json
    modscope summary examples/sharded.py:fsdp_mlp --distributed        # a one-process world, no launcher

On CPU the meshes use gloo; with a GPU for every local rank, NCCL on the local GPU of each rank (with fewer
GPUs than ranks, NCCL cannot run, so everything stays on CPU).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def _mesh(shape: tuple[int, ...] | None = None, names: tuple[str, ...] | None = None):
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if _on_gpus() else "gloo")
    device = "cuda" if _on_gpus() else "cpu"
    return init_device_mesh(device, shape or (dist.get_world_size(),), mesh_dim_names=names)


def _on_gpus() -> bool:
    """One GPU per local rank (NCCL cannot put two ranks on one GPU); otherwise everything stays on CPU."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return torch.cuda.is_available() and torch.cuda.device_count() >= ranks


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _on_gpus() else torch.device("cpu")


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x))))


class MLP(nn.Module):
    def __init__(self, vocab: int = 96, width: int = 32, depth: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def fsdp_mlp(vocab: int = 96, width: int = 32, depth: int = 3) -> nn.Module:
    """FSDP2 the usual way: every block is a fully_shard unit, then the root (embedding and head)."""
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh()
    torch.manual_seed(0)
    model = MLP(vocab, width, depth).to(_device())
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def forgot_the_root(vocab: int = 96, width: int = 32, depth: int = 3) -> nn.Module:
    """A common mistake: blocks are sharded but the root is not, so embedding and head stay whole on every rank."""
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh()
    torch.manual_seed(0)
    model = MLP(vocab, width, depth).to(_device())
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return model


def tensor_parallel_mlp(width: int = 32) -> nn.Module:
    """Megatron-style tensor parallelism: ``up`` split by output rows, ``down`` by input columns."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = _mesh(names=("tp",))
    torch.manual_seed(0)
    block = Block(width).to(_device())
    return parallelize_module(block, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})


def replicated_head(vocab: int = 96, width: int = 32, depth: int = 2) -> nn.Module:
    """Blocks sharded with FSDP2, but the head weight distributed as Replicate(): every rank holds it all."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, distribute_tensor

    mesh = _mesh()
    torch.manual_seed(0)
    model = MLP(vocab, width, depth).to(_device())
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    model.head.weight = nn.Parameter(distribute_tensor(model.head.weight.detach(), mesh, [Replicate()]))
    model.embed.weight = nn.Parameter(distribute_tensor(model.embed.weight.detach(), mesh, [Replicate()]))
    return model
