"""Every bundled example and a torchvision zoo: shapes equal a plain forward's, FLOPs equal FlopCounterMode's."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import modscope
from examples import catalog
from modscope.load.inputs import build_inputs
from modscope.reports.forward import Record, TensorMeta
from tests.contract import assert_unchanged, snapshot
from tests.flop_truth import flop_counter


def plain_run(model: nn.Module, inputs) -> tuple[object, dict[str, list], int]:
    """Output, every module's output shapes per call (plain hooks, no modscope), FlopCounterMode's total."""
    seen: dict[str, list] = {}
    handles = [
        module.register_forward_hook(lambda m, a, out, name=name: seen.setdefault(name, []).append(shapes(out)))
        for name, module in model.named_modules()
    ]
    try:
        model.eval()
        with torch.no_grad(), flop_counter() as counter:
            output = inputs.call(model)
    finally:
        for h in handles:
            h.remove()
    return output, seen, counter.get_total_flops()


def shapes(value):
    """Plain tensors/containers -> the Structure modscope should report."""
    if isinstance(value, torch.Tensor):
        return TensorMeta(tuple(value.shape), str(value.dtype).removeprefix("torch."))
    if isinstance(value, (tuple, list)):
        return tuple(shapes(v) for v in value)
    if isinstance(value, dict):
        return {str(k): shapes(v) for k, v in value.items()}
    return value


def recorded(forward, name):
    entry = forward.module(name)
    calls = [entry.first] + list(entry.variants)
    return [c.output for c in calls for _ in range(c.count)]


def check(model, inputs, *, device=None):
    before = snapshot(model)
    report = modscope.summary(model, inputs=inputs, device=device, memory=device is None)
    assert_unchanged(model, before)
    output, per_module, flops = plain_run(model, inputs)
    forward = report.forward
    assert forward.inputs.output == shapes(output)
    assert forward.flops_total == flops
    for name, outputs in per_module.items():
        got = recorded(forward, name)
        assert sorted(map(repr, got)) == sorted(map(repr, outputs)), name
    called = {n for n, m in model.named_modules() if n in per_module}
    assert {m.name for m in forward.modules if m.calls} == called
    expected: list[str] = []
    for n, m in model.named_modules():
        if n not in per_module and type(m).forward is not nn.Module.forward:
            if not any(n.startswith(f"{p}.") for p in expected):
                expected.append(n)
    assert list(forward.never_called) == expected
    return report


EXAMPLES = list(catalog.EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_every_example(example):
    if "needs_torchvision" in example.notes:
        pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = example.build()
    inputs = build_inputs(example.inputs, [f"{k}={v}" for k, v in example.kwargs])
    report = check(model, inputs)
    memory = report.forward.memory
    assert memory.params == report.totals.param_bytes
    assert memory.activations is not None and memory.activations > 0
    if "reused_module" in example.notes:
        assert any(m.calls > 1 for m in report.forward.modules)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_every_example_on_meta(example):
    if "needs_torchvision" in example.notes:
        pytest.importorskip("torchvision")
    model = example.build()
    inputs = build_inputs(example.inputs, [f"{k}={v}" for k, v in example.kwargs])
    on_cpu = modscope.summary(model, inputs=inputs, memory=False).forward
    before = snapshot(model)
    on_meta = modscope.summary(model, inputs=inputs, device="meta", memory=False).forward
    assert_unchanged(model, before)
    assert on_meta.device == "meta"
    assert on_meta.inputs == on_cpu.inputs
    assert [(m.name, m.calls, m.first) for m in on_meta.modules] == [(m.name, m.calls, m.first) for m in on_cpu.modules]
    if "data_dependent" in example.notes:
        assert on_meta.fallbacks, "data-dependent control flow needs real tensors"
    else:
        assert on_meta.fallbacks == ()
        if any("attention" in op for op in on_cpu.uncounted_ops):
            # no FLOP formula for CPU attention kernels; on meta attention's matmuls are counted (docs/forward.md)
            assert on_meta.flops_total > on_cpu.flops_total
        else:
            assert on_meta.flops_total == on_cpu.flops_total


ZOO = ["resnet18", "mobilenet_v3_small", "squeezenet1_0", "efficientnet_b0", "vit_b_16"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_torchvision_zoo(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    inputs = build_inputs(["1,3,224,224"])
    report = check(model, inputs)
    assert report.forward.inputs.output == TensorMeta((1, 1000), "float32")
    assert report.forward.unused_parameters == ()


@pytest.mark.slow
def test_torchvision_on_meta_matches_cpu():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    inputs = build_inputs(["1,3,224,224"])
    on_cpu = modscope.summary(model, inputs=inputs, memory=False).forward
    on_meta = modscope.summary(model, inputs=inputs, device="meta", memory=False).forward
    assert on_meta.flops_total == on_cpu.flops_total
    assert [m.first for m in on_meta.modules] == [m.first for m in on_cpu.modules]


def test_output_structures_of_multi_output_examples():
    two = modscope.summary(catalog.get("two_heads").build(), inputs=torch.randn(1, 3, 32, 32)).forward
    assert two.inputs.output == (TensorMeta((1, 10), "float32"), TensorMeta((1, 4), "float32"))
    d = modscope.summary(catalog.get("dict_output").build(), inputs=torch.randn(1, 3, 32, 32)).forward
    assert d.inputs.output == {"logits": TensorMeta((1, 10), "float32"), "embedding": TensorMeta((1, 32), "float32")}
    assert not isinstance(d.inputs.output, Record)
