"""Every command's tables rendered at 60, 80, 120 and 200 columns, compared with golden files; and at widths
from 60 up, each module name whole and no line wider than the width.

Regenerate after an intended change with: MODSCOPE_UPDATE_GOLDEN=1 pytest tests/test_render_widths.py
(goldens: tests/golden/widths/*.txt, one file per view holding all four widths). Timings vary from run to
run, so the timing report's times are replaced by fixed ones before it is drawn; nothing else is normalised.
"""
from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest
import torch
import torchvision
from rich.console import Console, Group

import modscope
from examples.catalog import EXAMPLES
from modscope.render.checkpoint import checkpoint_summary_view, compat_view, stored_tensor_table
from modscope.render.console import audit_view, summary_view, tensor_table, tree_view
from modscope.render.diff import diff_view
from modscope.render.grads import grads_view
from modscope.render.nonfinite import nonfinite_view
from modscope.render.timing import timing_view
from modscope.reports.timing import PassTiming, TimeStat
from tests.checkpoint_files import Small, write_dcp, write_safetensors, write_torch
from tests.test_render_static import check_golden
from tests.training_models import NanInLayer

WIDTHS = (60, 80, 120, 200)


def render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, soft_wrap=False)
    console.print(renderable)
    return console.file.getvalue()


def at_widths(renderable, names=()) -> str:
    """The renderable at each of WIDTHS; asserts no line is wider than the width and each of ``names`` is whole."""
    parts = []
    for w in WIDTHS:
        text = render(renderable, w)
        too_wide = [line for line in text.splitlines() if len(line) > w]
        assert not too_wide, f"at {w} columns: {too_wide[:3]}"
        broken = [n for n in names if not _whole(n, text)]
        assert not broken, f"at {w} columns, not whole: {broken[:5]}"
        parts.append(f"=== {w} columns ===\n{text}")
    return "".join(parts)


def _example(name):
    return next(e for e in EXAMPLES if e.name == name).build()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18()


@pytest.fixture(scope="module")
def resnet18_static(resnet18):
    return modscope.summary(resnet18, target="torchvision.models:resnet18")


@pytest.fixture(scope="module")
def resnet18_forward(resnet18):
    return modscope.summary(resnet18, inputs=torch.randn(1, 3, 64, 64), target="torchvision.models:resnet18")


def steady(report):
    """The timing report with fixed times: layers by name, each slower than the next (times vary per run)."""
    layers = sorted(report.layers, key=lambda t: t.name)
    n = len(layers)
    whole = n * (n + 1) / 2

    def stat(k: float) -> TimeStat:
        return TimeStat(k * 1.25e6, k * 1.5e6)

    fixed = tuple(
        replace(t, forward_self=stat(n - i), forward_total=stat(2 * (n - i)), forward_share=(n - i) / whole,
                backward_self=stat(3 * (n - i)), backward_total=stat(4 * (n - i)), backward_share=(n - i) / whole,
                below_resolution=False)
        for i, t in enumerate(layers)
    )
    passes = PassTiming(bare=stat(whole), hooked=stat(whole + 1), layer_sum=whole * 1.25e6)
    return replace(report, layers=fixed, resolution_ns=50.0, forward=passes, backward=passes)


@pytest.fixture(scope="module")
def lenet_timing():
    model = _example("lenet")
    report = modscope.time_layers(model, torch.randn(1, 1, 28, 28), backward=True, warmup=0, repeat=2,
                                  name="examples/lenet.py:LeNet")
    return steady(report)


def test_summary_resnet18(resnet18_static):
    check_golden("widths/summary_resnet18.txt", at_widths(summary_view(resnet18_static)))


def test_tree_resnet18(resnet18_static):
    """``tree`` prints a tree, not a table: it wraps at the width too, every label's name whole."""
    report = resnet18_static
    check_golden("widths/tree_resnet18.txt", at_widths(tree_view(report, depth=3)))
    at_widths(tree_view(report, collapse=False), names=[m.name for m in report.modules if m.name])


def test_summary_input_resnet18(resnet18_forward):
    """The forward table, FLOPs, the memory estimate and the by-precision table."""
    check_golden("widths/summary_input_resnet18.txt", at_widths(summary_view(resnet18_forward)))


def test_summary_tensors_tiny_gpt():
    """summary --tensors of a model with a tied weight: the tensor table and the shared table."""
    from examples.transformer import TinyGPT

    report = modscope.summary(TinyGPT(layers=2), target="examples/transformer.py:TinyGPT")
    check_golden("widths/summary_tensors_tiny_gpt.txt", at_widths(Group(summary_view(report), tensor_table(report))))


def test_time_backward_lenet(lenet_timing):
    check_golden("widths/time_backward_lenet.txt", at_widths(timing_view(lenet_timing)))


def test_grads_finetune():
    """A partly frozen resnet18: folded frozen runs and long names."""
    torch.manual_seed(0)
    model = _example("resnet18_finetune")
    report = modscope.grads(model, torch.randn(2, 3, 64, 64), name="examples/resnet_finetune.py:resnet18_finetune")
    check_golden("widths/grads_finetune.txt", at_widths(grads_view(report)))


def test_grads_params_lenet():
    """grads --params: the per-parameter table; zero gradients give the problems table."""
    torch.manual_seed(0)
    model = _example("lenet")
    with torch.no_grad():
        model.net[11].weight.zero_()  # nothing flows back past the last layer: zero gradients upstream
    report = modscope.grads(model, torch.randn(2, 1, 28, 28), name="examples/lenet.py:LeNet")
    check_golden("widths/grads_params_lenet.txt", at_widths(grads_view(report, params=True)))


def test_nan_in_layer():
    torch.manual_seed(0)
    report = modscope.find_nonfinite(NanInLayer(), torch.randn(4, 8), name="tests/training_models.py:NanInLayer")
    check_golden("widths/nan_in_layer.txt", at_widths(nonfinite_view(report)))


def test_audit_lenet():
    report = modscope.audit(_example("lenet"), expect_dtype="float16", target="examples/lenet.py:LeNet")
    check_golden("widths/audit_lenet.txt", at_widths(audit_view(report)))


def test_diff(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = {f"encoder.layers.{i}.attention.in_proj.weight": torch.full((4, 4), float(i)) for i in range(3)}
    a |= {"encoder.embed.weight": torch.arange(12.0).reshape(3, 4), "old.buffer": torch.zeros(2)}
    b = {k: v.clone() for k, v in a.items() if k != "old.buffer"}
    b["encoder.layers.1.attention.in_proj.weight"][0] += 0.5
    b["encoder.embed.weight"] = torch.zeros(3, 5)
    b["encoder.layers.2.attention.in_proj.weight"] = b["encoder.layers.2.attention.in_proj.weight"].half()
    write_torch(tmp_path / "a.pt", a)
    write_safetensors(tmp_path / "b.safetensors", b)
    report = modscope.diff("a.pt", "b.safetensors")
    changed = (*report.shape_changed, *report.dtype_changed, *report.value_changed)
    listed = [*report.only_in_a, *(c.key for c in changed)]
    assert len(listed) == 4
    check_golden("widths/diff.txt", at_widths(diff_view(report), names=listed))


def test_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Small()
    state = {f"module.{k}": v for k, v in model.state_dict().items() if k != "body.2.bias"}
    state["module.body.0.weight"] = torch.zeros(5, 4)
    write_torch(tmp_path / "ddp.pt", state)
    model.body[2].to(torch.float16)
    report = modscope.check(model, "ddp.pt", target="net.py:Small")
    check_golden("widths/check.txt", at_widths(compat_view(report)))


def test_checkpoint_summary_dcp(tmp_path, monkeypatch):
    """summary CKPT --tensors of a DCP folder: prefixes, totals, the data-file layout and the tensor table."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    write_dcp(tmp_path / "ckpt", {"model": Small().state_dict()})
    report = modscope.inspect_checkpoint("ckpt")
    view = Group(checkpoint_summary_view(report), stored_tensor_table(report))
    check_golden("widths/checkpoint_summary_dcp.txt", at_widths(view, names=[t.name for t in report.tensors]))


def _whole(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text) is not None


@pytest.mark.parametrize("width", [60, 67, 80, 97, 133, 200])
def test_every_name_whole_and_no_line_too_wide(width, resnet18, resnet18_static, resnet18_forward, lenet_timing):
    """resnet18, every module (no collapsing, every depth): static and forward summaries, timing, gradients."""
    names = [m.name for m in resnet18_forward.modules if m.name]
    torch.manual_seed(0)
    grads = modscope.grads(resnet18, torch.randn(2, 3, 32, 32)) if width == 60 else None
    views = {
        "summary": summary_view(resnet18_static, depth=99, collapse=False),
        "summary --input": summary_view(resnet18_forward, depth=99, collapse=False),
        "time": timing_view(lenet_timing, top=None),
    }
    if grads is not None:
        views["grads"] = grads_view(grads, params=True)
    for what, view in views.items():
        text = render(view, width)
        too_wide = [line for line in text.splitlines() if len(line) > width]
        assert not too_wide, f"{what} at {width}: {too_wide[:3]}"
        wanted = {"time": [t.name for t in lenet_timing.layers if t.name],
                  "grads": grads and [m.name for m in grads.modules if m.name] + [p.name for p in grads.params]}.get(
            what, names)
        broken = [n for n in wanted if not _whole(n, text)]
        assert not broken, f"{what} at {width}: names not whole: {broken[:5]}"


def test_cli_width_option_and_the_piped_default():
    """--width N draws N columns; piped with no COLUMNS, tables are 80 wide and say what they left out."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, run_modscope

    target = "examples/transformer.py:TinyGPT"
    narrow = run_modscope("summary", target, "--width", "60")
    assert narrow.returncode == 0, narrow.stderr
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    assert "blocks.0.attn " in narrow.stdout and "not shown at 60 columns: params, trainable, buffers" in narrow.stdout
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run([sys.executable, "-m", "modscope", "summary", target], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert max(len(line) for line in piped.stdout.splitlines()) <= 80
    assert "not shown at 80 columns: buffers" in piped.stdout and "blocks.0.attn " in piped.stdout


def test_distributed_layout():
    """The per-rank and mesh tables of a gathered distributed summary: a pure render of a 4-rank layout as
    ``distributed_summary`` reports it (running it needs torchrun; tests/test_distributed.py does)."""
    from modscope.render.distributed import distributed_view
    from modscope.reports.distributed import DistributedInfo, MeshInfo, RankInfo

    ranks = tuple(RankInfo(rank=r, host=f"node{r // 2}.cluster.example.org", local_rank=r % 2,
                           devices=(f"cuda:{r % 2}",), param_numel=2_500_000 + r, param_bytes=10_000_000 + 4 * r,
                           buffer_bytes=4096) for r in range(4))
    meshes = (MeshInfo(id="mesh0", device_type="cuda", shape=(2, 2), dim_names=("dp", "tp"), ranks=(0, 1, 2, 3),
                       params=40, param_numel=9_000_000),)
    info = DistributedInfo(rank=0, world_size=4, backend="nccl", meshes=meshes, fsdp_modules=("layers.0", "layers.1"),
                           sharded_params=36, replicated_params=4, partial_params=0, plain_params=2,
                           plain_param_numel=1_000_000, this_rank=ranks[0], ranks=ranks, gathered=True)
    view = distributed_view(info, param_bytes=40_000_000, params=10_000_000)
    check_golden("widths/distributed_layout.txt", at_widths(view))
