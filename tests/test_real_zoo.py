"""Real timm, transformers and torchvision architectures at small configs: modscope's numbers against
independent ground truth (parameters by identity, a plain hooked forward, FlopCounterMode), on CPU and on meta,
and every model left exactly as it was found."""
from __future__ import annotations

import pytest

import modscope
import dataclasses

import torch

from modscope.reports.forward import Opaque, Record, TensorMeta
from tests.contract import assert_unchanged, snapshot
from tests.flop_truth import flop_counter
from tests.real_zoo import HF, TIMM, TORCHVISION, ZOO

pytestmark = pytest.mark.slow


def test_the_zoo_covers_what_issue_16_names():
    assert len(ZOO) >= 30 and len(TIMM) >= 12 and len(HF) >= 12
    assert {"fasterrcnn", "maskrcnn", "deeplabv3"} <= {z.name for z in TORCHVISION}


@pytest.fixture(params=ZOO, ids=[z.name for z in ZOO])
def built(request):
    pytest.importorskip({"timm": "timm", "hf": "transformers"}.get(request.param.family, "torchvision"))
    model, inputs = request.param.build()
    return request.param, model.eval(), inputs


def test_totals_are_the_unique_tensors(built):
    _, model, _ = built
    report = modscope.summary(model)
    assert report.totals.params == sum(p.numel() for p in model.parameters())  # parameters() dedups by identity
    assert report.totals.buffers == sum(b.numel() for b in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.totals.trainable_params == trainable


def plain(value):
    """What a plain run returned, in the documented Structure form (docs/json.md), written independently:
    tensors as shape+dtype; namedtuples, dict subclasses (ModelOutput) and dataclasses as typed records;
    other objects (caches, ImageList) by type."""
    if isinstance(value, torch.Tensor):
        return TensorMeta(tuple(value.shape), str(value.dtype).removeprefix("torch."))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return Record(type(value).__name__, {k: plain(v) for k, v in zip(value._fields, value)})
    if isinstance(value, (tuple, list)):
        return tuple(plain(v) for v in value)
    if isinstance(value, dict):
        fields = {str(k): plain(v) for k, v in value.items()}
        return fields if type(value) is dict else Record(type(value).__name__, fields)
    if dataclasses.is_dataclass(value):
        return Record(type(value).__name__, {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return Opaque(type(value).__name__)


def _by_type(structure):
    """Opaque values compared by type only (their repr is a courtesy, not a fact under test)."""
    if isinstance(structure, Opaque):
        return ("opaque", structure.type)
    if isinstance(structure, Record):
        return (structure.type, {k: _by_type(v) for k, v in structure.fields.items()})
    if isinstance(structure, tuple):
        return tuple(_by_type(v) for v in structure)
    if isinstance(structure, dict):
        return {k: _by_type(v) for k, v in structure.items()}
    return structure


def plain_run(model, inputs):
    """Every module's outputs per call through plain hooks, and FlopCounterMode's total, with no modscope."""
    seen: dict[str, list] = {}
    handles = [
        module.register_forward_hook(lambda m, a, out, name=name: seen.setdefault(name, []).append(plain(out)))
        for name, module in model.named_modules()
    ]
    try:
        with torch.no_grad(), flop_counter() as counter:
            output = inputs.call(model)
    finally:
        for h in handles:
            h.remove()
    return plain(output), seen, counter.get_total_flops()


def test_forward_on_cpu_equals_a_plain_pass(built):
    _, model, inputs = built
    before = snapshot(model)
    forward = modscope.summary(model, inputs=inputs).forward  # memory on: a second, training-mode pass
    assert_unchanged(model, before)
    output, per_module, flops = plain_run(model, inputs)
    assert _by_type(forward.inputs.output) == _by_type(output)
    assert forward.flops_total == flops
    for name, outputs in per_module.items():
        entry = forward.module(name)
        calls = [entry.first, *entry.variants]
        recorded = [_by_type(c.output) for c in calls for _ in range(c.count)]
        assert sorted(map(repr, recorded)) == sorted(repr(_by_type(o)) for o in outputs), name


#: models with a module that cannot run on meta: detection heads (nonzero, NMS on values), and Mixtral's experts
#: (transformers picks torch._grouped_mm on meta, whose meta kernel accepts only bfloat16/float16)
FALLS_BACK = {"fasterrcnn", "maskrcnn", "mixtral"}


def test_meta_equals_cpu(built):
    zoo, model, inputs = built
    cpu = modscope.summary(model, inputs=inputs, memory=False).forward
    before = snapshot(model)
    meta = modscope.summary(model, inputs=inputs, device="meta", memory=False).forward
    assert_unchanged(model, before)
    on_cpu = {m.name: (m.calls, m.flops) for m in cpu.modules}
    on_meta = {m.name: (m.calls, m.flops) for m in meta.modules}
    assert set(on_meta) == set(on_cpu)
    ran_real = [f.module for f in meta.fallbacks if f.action.startswith("ran it on CPU")]
    assert (zoo.name in FALLS_BACK) == bool(ran_real), [f.reason for f in meta.fallbacks]
    if not ran_real:
        assert _by_type(meta.inputs.output) == _by_type(cpu.inputs.output)
        assert meta.flops_total == cpu.flops_total
        assert on_meta == on_cpu
        return
    # a module that ran on real tensors got meta-computed (value-less) inputs: what it and its callers did
    # with data-dependent results (boxes surviving NMS) may differ; every other module agrees exactly
    def touched(name):
        return any(name == f or name.startswith(f + ".") or f.startswith(name + ".") or not name for f in ran_real)

    assert {n: v for n, v in on_meta.items() if not touched(n)} == {n: v for n, v in on_cpu.items() if not touched(n)}


def test_a_training_step_reaches_every_trainable_parameter_or_says_which_not(built):
    zoo, model, inputs = built
    if zoo.family == "torchvision" and zoo.name != "deeplabv3":
        pytest.skip("detection models need targets to compute a loss in training mode")
    report = modscope.grads(model, inputs)
    assert {p.name for p in report.params} == {n for n, _ in model.named_parameters()}  # frozen ones too
    reached = {p.name for p in report.params if p.norm is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert reached <= trainable
