"""One rank of the distributed tests: ``torchrun ... tests/distributed_worker.py OUT SCENARIO...``.

Each scenario runs on every rank with the gloo backend on CPU, and each rank pickles what it saw to
``OUT/SCENARIO.rankN.pkl`` (a dict, or ``{"error": traceback}``); the tests assert on those files, so a
failure shows up as a readable assertion instead of a hung job. The process group has a 60 s timeout and
is destroyed in ``finally``.
"""
from __future__ import annotations

import datetime
import gc
import os
import pickle
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402


def scenario_api(out: Path) -> dict:
    """fsdp_mlp seen through summary (every rank alone, rank 0 alone) and the gathered reports."""
    import modscope
    from examples.sharded import MLP, fsdp_mlp

    rank = dist.get_rank()
    model = fsdp_mlp()
    result = {"reference_params": sum(p.numel() for p in MLP().parameters())}
    before = {n: (id(p), p._local_tensor.clone(), p.requires_grad) for n, p in model.named_parameters()}
    result["local"] = modscope.summary(model).to_dict()
    if rank == 0:  # alone: must not wait for rank 1 (a DTensor op could be a collective)
        result["rank0_alone"] = modscope.audit(model).ok
    dist.barrier()
    gathered = modscope.distributed_summary(model, target="fsdp_mlp")
    result["gathered"] = None if gathered is None else gathered.to_dict()
    audit = modscope.distributed_audit(model, expect_dtype="float32")
    result["audit"] = None if audit is None else audit.to_dict()
    group = dist.new_group([0, 1])
    other = modscope.distributed_summary(model, group=group, dst=1, check_values=False)
    result["dst1"] = None if other is None else other.to_dict()
    result["unchanged"] = all(
        id(p) == before[n][0] and torch.equal(p._local_tensor, before[n][1]) and p.requires_grad == before[n][2]
        for n, p in model.named_parameters()
    )
    if rank == 0:
        from modscope.render.console import summary_view, tensor_table
        from rich.console import Console

        console = Console(width=160, record=True, file=open("/dev/null", "w"))
        console.print(summary_view(gathered), tensor_table(gathered))
        result["text"] = console.export_text()
    return result


def scenario_findings(out: Path) -> dict:
    """Every distributed finding at once: unsharded, replicated, partial, mixed meshes, NaN, diverged replicas."""
    import modscope
    from examples.sharded import MLP
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,))
    mesh2d = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
    torch.manual_seed(rank)  # plain parameters now differ between ranks
    model = MLP(vocab=16, width=8, depth=2)
    for block in model.blocks:
        fully_shard(block, mesh=mesh)  # the root is not sharded: embed stays a plain tensor
    head = distribute_tensor(model.head.weight.detach(), mesh, [Replicate()])  # broadcast from rank 0
    model.head.weight = nn.Parameter(head)
    model.extra = nn.Linear(8, 6)
    model.extra.weight = nn.Parameter(distribute_tensor(model.extra.weight.detach(), mesh2d, [Replicate(), Shard(1)]))
    model.extra.bias = nn.Parameter(DTensor.from_local(torch.ones(6), mesh, [Partial()]))
    if rank == 1:
        with torch.no_grad():
            model.blocks[0].up.weight._local_tensor[0, 0] = float("nan")
            model.head.weight._local_tensor[0, 0] += 1.0  # a replica that diverged
    report = modscope.distributed_summary(model)
    return {"gathered": None if report is None else report.to_dict()}


def scenario_rank_error(out: Path) -> dict:
    """Rank 1 fails inside distributed_summary; rank 0 must get an error naming it, nobody hangs."""
    import modscope
    from modscope.errors import ModscopeError

    model = nn.Linear(3, 3) if dist.get_rank() == 0 else "not a module"
    try:
        modscope.distributed_summary(model)
    except ModscopeError as exc:
        return {"error_text": str(exc), "exit_code": exc.exit_code}
    return {"error_text": None}


def scenario_mismatch(out: Path) -> dict:
    """Ranks holding different models: rank_mismatch, not a crash."""
    import modscope

    torch.manual_seed(0)
    layers = [nn.Linear(4, 4)] + ([nn.Linear(4, 2)] if dist.get_rank() == 1 else [])
    report = modscope.distributed_summary(nn.Sequential(*layers))
    return {"gathered": None if report is None else report.to_dict()}


def scenario_dcp(out: Path) -> dict:
    """DCP folders written by dcp.save from FSDP2 and tensor-parallel models, plus full single-file copies."""
    import torch.distributed.checkpoint as dcp
    from examples.sharded import fsdp_mlp, tensor_parallel_mlp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    folder = out / "ckpt"
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = fsdp_mlp()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(folder / "fsdp"))
    whole = get_model_state_dict(model, options=full)
    if dist.get_rank() == 0:
        torch.save(whole, folder / "fsdp_full.pt")
    with torch.no_grad():
        model.blocks[1].up.weight._local_tensor.add_(0.5)  # both ranks' shards change
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(folder / "fsdp_changed"))
    tp = tensor_parallel_mlp()
    dcp.save(tp.state_dict(), checkpoint_id=str(folder / "tp"))
    whole = get_model_state_dict(tp, options=full)
    if dist.get_rank() == 0:
        torch.save(whole, folder / "tp_full.pt")
    dist.barrier()
    return {"folder": str(folder)}


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    failed = False
    try:
        for name in sys.argv[2:]:
            try:
                result = globals()[f"scenario_{name}"](out)
            except Exception:
                result = {"error": traceback.format_exc()}
                failed = True
            with open(out / f"{name}.rank{rank}.pkl", "wb") as f:
                pickle.dump(result, f)
            dist.barrier()
    finally:
        result = None
        gc.collect()
        dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    # Gloo's worker threads can abort the interpreter's own shutdown ("terminate called without an active
    # exception", SIGABRT) after everything is written and the group destroyed: skip that shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
