"""Checkpoint benchmarks: python -m bench.checkpoint   (issue #4; results in docs/benchmarks.md)

1. ``modscope diff A B`` on two checkpoints of >= 2 GB each (safetensors and torch zip), against reading
   both files sequentially in the same run (throughput; target >= 70%) and against the naive ``torch.load``
   of both; peak RSS of each above ``python -c "import torch"`` (target <= 300 MB). Cold runs evict the files
   from the page cache first (posix_fadvise DONTNEED); warm runs read them from memory.
2. ``modscope diff --keys-only`` on a sharded safetensors index of a 70B-class model (Llama-2-70B layout,
   header-only sparse shards: valid headers, holes for data) in under 1 s beyond the time of importing torch.

Every measurement runs in its own subprocess and reports its own peak RSS (``VmHWM`` of /proc/self/status:
``ru_maxrss`` would also count the pages a forked child shares with its parent before exec).
Environment: MODSCOPE_BENCH_GB (default 2.1) sets each checkpoint's size; MODSCOPE_BENCH_DIR the scratch
folder (default: a new folder under /tmp, deleted afterwards).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.common import print_table, run

GB = float(os.environ.get("MODSCOPE_BENCH_GB", "2.1"))


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache, so the next read comes from disk."""
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


READ_BOTH = """
import sys, time
buf = bytearray(8 << 20)
view = memoryview(buf)
start = time.perf_counter()
total = 0
for path in sys.argv[1:]:
    with open(path, "rb", buffering=0) as f:
        while (n := f.readinto(view)):
            total += n
print(total, time.perf_counter() - start)
"""

DIFF = """
import sys, time
import modscope, modscope.api.compare  # torch is imported here, before the clock starts
start = time.perf_counter()
report = modscope.diff(sys.argv[1], sys.argv[2])
print(len(report.value_changed), report.unchanged, time.perf_counter() - start)
"""

NAIVE_TORCH = """
import sys, time, torch
start = time.perf_counter()
a = torch.load(sys.argv[1], weights_only=True)
b = torch.load(sys.argv[2], weights_only=True)
changed = sum(not torch.equal(a[k], b[k]) for k in a)
print(changed, time.perf_counter() - start)
"""

NAIVE_SAFETENSORS = """
import sys, time, torch
from safetensors.torch import load_file
start = time.perf_counter()
a = load_file(sys.argv[1])
b = load_file(sys.argv[2])
changed = sum(not torch.equal(a[k], b[k]) for k in a)
print(changed, time.perf_counter() - start)
"""


MAKE_PAIR = """
import sys
from pathlib import Path
from bench.checkpoint import write_pair
write_pair(Path(sys.argv[1]), float(sys.argv[2]))
"""


def make_pair(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Write the pair from a separate process, so this one stays small (its children are measured)."""
    run(MAKE_PAIR, str(folder), str(GB))
    return {"safetensors": (folder / "a.safetensors", folder / "b.safetensors"), "torch": (folder / "a.pt", folder / "b.pt")}


def write_pair(folder: Path, gb: float) -> None:
    """Two checkpoints of ``gb`` gigabytes each (B = A with half the tensors changed), in both formats."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    total = int(gb * 1e9 / 4)
    embed = total // 4  # one tensor of a quarter of the file: memory must not follow tensor size
    layers = 48
    per_layer = (total - embed) // layers
    state = {"embed.weight": torch.empty(embed).uniform_(-1, 1)}
    for i in range(layers):
        state[f"layers.{i}.weight"] = torch.empty(per_layer).uniform_(-1, 1)
        state[f"layers.{i}.bias"] = torch.zeros(1024)
    paths = {"safetensors": (folder / "a.safetensors", folder / "b.safetensors"), "torch": (folder / "a.pt", folder / "b.pt")}
    save_file(state, str(paths["safetensors"][0]))
    torch.save(state, paths["torch"][0])
    for i, (name, tensor) in enumerate(state.items()):
        if i % 2 == 0:
            tensor[:: 1 + i] += 0.001  # a fine-tune touching half the tensors
    save_file(state, str(paths["safetensors"][1]))
    torch.save(state, paths["torch"][1])


def bench_diff(folder: Path) -> None:
    paths = make_pair(folder)
    import_wall, import_rss, _ = run("import torch")
    rows = []
    for fmt, (a, b) in paths.items():
        size = (a.stat().st_size + b.stat().st_size) / 1e9
        for cache in ("cold", "warm"):
            if cache == "cold":
                evict(a, b)
            else:
                run(READ_BOTH, str(a), str(b))  # warm the page cache
            _, read_rss, out = run(READ_BOTH, str(a), str(b))
            read_s = float(out.split()[1])
            if cache == "cold":
                evict(a, b)
            _, diff_rss, out = run(DIFF, str(a), str(b))
            diff_s = float(out.split()[-1])
            if cache == "cold":
                evict(a, b)
            _, naive_rss, out = run(NAIVE_TORCH if fmt == "torch" else NAIVE_SAFETENSORS, str(a), str(b))
            naive_s = float(out.split()[-1])
            rows.append([
                fmt, cache, f"{size:.2f}", f"{size / read_s:.2f}", f"{size / diff_s:.2f}",
                f"{100 * read_s / diff_s:.0f}%", f"{diff_rss - import_rss:.0f}", f"{size / naive_s:.2f}",
                f"{naive_rss - import_rss:.0f}",
            ])  # fmt: skip
    print_table(
        f"diff of two {GB:g} GB checkpoints (half the tensors changed; one tensor is a quarter of the file). "
        f"Throughput in GB/s of both files; RSS in MiB above `import torch` ({import_rss:.0f} MiB, {import_wall:.2f} s)",
        ["format", "cache", "GB read", "read both GB/s", "diff GB/s", "diff / read", "diff RSS MiB",
         "naive GB/s", "naive RSS MiB"],
        rows,
    )  # fmt: skip


# --- keys-only on a 70B-class index ---------------------------------------------------------------------

LLAMA_70B = {"vocab": 32000, "hidden": 8192, "layers": 80, "ffn": 28672, "kv": 1024, "shards": 15}


def llama_70b_shapes(prefix: str = "") -> dict[str, list[int]]:
    c = LLAMA_70B
    h, f, kv = c["hidden"], c["ffn"], c["kv"]
    shapes = {f"{prefix}model.embed_tokens.weight": [c["vocab"], h]}
    for i in range(c["layers"]):
        p = f"{prefix}model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
            p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h], p + "mlp.down_proj.weight": [h, f],
            p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
        })  # fmt: skip
    shapes[f"{prefix}model.norm.weight"] = [h]
    shapes[f"{prefix}lm_head.weight"] = [c["vocab"], h]
    return shapes


def write_header_only_index(folder: Path, shapes: dict[str, list[int]]) -> tuple[Path, int]:
    """Valid safetensors headers; each shard is truncated up to its full size, leaving a hole for the data."""
    folder.mkdir(parents=True)
    names = list(shapes)
    shards = LLAMA_70B["shards"]
    per = -(-len(names) // shards)
    weight_map = {}
    total = 0
    for s in range(shards):
        header, offset = {}, 0
        for name in names[s * per : (s + 1) * per]:
            nbytes = 2
            for d in shapes[name]:
                nbytes *= d
            header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / file, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + offset)
        weight_map.update(dict.fromkeys(header, file))
        total += offset
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index, total


def bench_keys_only(folder: Path) -> None:
    shapes_a = llama_70b_shapes()
    shapes_b = dict(shapes_a)
    shapes_b["lm_head.weight"] = [32001, 8192]  # one resized head, as after adding a token
    index_a, total = write_header_only_index(folder / "a", shapes_a)
    index_b, _ = write_header_only_index(folder / "b", shapes_b)
    cli = "import sys; from modscope.cli import main; sys.argv = ['modscope', *sys.argv[1:]]; main()"
    timed = (  # the CLI ends the process itself (after atexit handlers): the clock stops in one
        "import atexit, sys, time, torch, modscope.api.compare, modscope.cli.checkpoint_commands\n"
        "start = time.perf_counter()\n"
        "atexit.register(lambda: print('seconds', time.perf_counter() - start))\n"
        "from modscope.cli import main\n"
        "sys.argv = ['modscope', *sys.argv[1:]]\n"
        "main()\n"
    )
    rows = {"import": [], "diff": [], "summary": [], "diff-in": [], "summary-in": []}
    for _ in range(5):
        rows["import"].append(run("import torch")[0])
        rows["diff"].append(run(cli, "diff", str(index_a), str(index_b), "--keys-only", "--json")[0])
        rows["summary"].append(run(cli, "summary", str(index_a), "--json")[0])
        rows["diff-in"].append(_seconds(run(timed, "diff", str(index_a), str(index_b), "--keys-only", "--json")[2]))
        rows["summary-in"].append(_seconds(run(timed, "summary", str(index_a), "--json")[2]))
    best = {k: min(v) for k, v in rows.items()}
    print_table(
        f"--keys-only on a sharded safetensors index of a 70B-class model ({len(shapes_a)} tensors, "
        f"{LLAMA_70B['shards']} header-only shards, {total / 1e9:.0f} GB described); best of 5. "
        "'after import' is timed inside the process, from after `import torch` to the end of the command",
        ["command", "whole process s", "whole - import torch s", "after import s"],
        [
            ["python -c 'import torch'", f"{best['import']:.2f}", "-", "-"],
            ["modscope diff A B --keys-only --json", f"{best['diff']:.2f}", f"{best['diff'] - best['import']:.2f}",
             f"{best['diff-in']:.3f}"],
            ["modscope summary A --json", f"{best['summary']:.2f}", f"{best['summary'] - best['import']:.2f}",
             f"{best['summary-in']:.3f}"],
        ],
    )  # fmt: skip


def _seconds(out: str) -> float:
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("seconds")))


def main() -> None:
    scratch = os.environ.get("MODSCOPE_BENCH_DIR")
    folder = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="modscope-bench-", dir="/tmp"))
    try:
        bench_keys_only(folder / "index")
        bench_diff(folder)
    finally:
        if not scratch:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
