"""Small meta ops answered by CPU kernels on stand-ins give exactly what the meta kernels give."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

import modscope
from modscope.collect.forward import meta_stand_ins
from modscope.collect.forward.meta_stand_ins import can_stand_in, can_stand_in_place, in_place_on_cpu, on_cpu

aten = torch.ops.aten


def meta(*shape, dtype=torch.float32, channels_last=False):
    t = torch.empty(*shape, dtype=dtype, device="meta")
    return t.to(memory_format=torch.channels_last) if channels_last else t


CALLS = [
    (aten.add.Tensor, (meta(2, 1, 4), meta(3, 1))),
    (aten.mul.Tensor, (meta(1, 8, 4, 4, channels_last=True), meta(1, 8, 1, 1))),
    (aten.add.Tensor, (meta(3, dtype=torch.int64), 0.5)),
    (aten.lt.Tensor, (meta(4, 5), meta(5))),
    (aten.div.Tensor_mode, (meta(4, dtype=torch.int32), meta(4, dtype=torch.int32)), {"rounding_mode": "floor"}),
    (aten.where.self, (meta(4, 1, dtype=torch.bool), meta(1, 3), meta(4, 3, dtype=torch.float64))),
    (aten.hardswish.default, (meta(1, 16, 8, 8).transpose(1, 3),)),
    (aten._softmax.default, (meta(2, 5, 7), 1, False)),
    (aten.gelu.default, (meta(2, 3, dtype=torch.bfloat16),), {"approximate": "tanh"}),
    (aten.native_batch_norm.default, (meta(2, 4, 3, 3), meta(4), meta(4), meta(4), meta(4), True, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (meta(2, 4, 3, 3), meta(4), meta(4), meta(4), meta(4), False, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (meta(1, 8, 5, 5, channels_last=True), None, None, meta(8), meta(8), False, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (meta(2, 4, 3, dtype=torch.float64), *(meta(4, dtype=torch.float64),) * 4, True, 0.1, 0.0)),
    (aten.native_layer_norm.default, (meta(2, 3, 8), [8], meta(8), meta(8), 1e-5)),
    (aten.native_group_norm.default, (meta(2, 6, 4, 4), meta(6), meta(6), 2, 6, 16, 3, 1e-5)),
    (aten.mean.dim, (meta(2, 16, 5, 5, channels_last=True), [2, 3], True)),
    (aten.mean.dim, (meta(2, 3, 4, dtype=torch.bfloat16), [-1], False)),
    (aten.mean.dim, (meta(2, 3, 4), [1], False), {"dtype": torch.float64}),
    (aten.sum.dim_IntList, (meta(3, 7, dtype=torch.int64), [0], False)),
    (aten.sum.dim_IntList, (meta(2, 8, 5, 5, channels_last=True), [], True)),
    (aten.amax.default, (meta(2, 8, 5, 5, channels_last=True), [1], True)),
    (aten.amin.default, (meta(6, dtype=torch.float16), [0], False)),
]


def test_reductions_stand_in_with_the_meta_kernels_metadata_across_shapes_layouts_and_dtypes():
    """What the CALLS above sample, swept: 4 reductions x 6 inputs x 6 dtypes x 5 dim choices x keepdim."""
    compared = 0
    for func in (aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default):
        for shape, channels_last in (((2, 8, 5, 5), False), ((2, 8, 5, 5), True), ((3, 7), False), ((6,), False)):
            for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool):
                for dims in ([], [0], [-1], list(range(len(shape)))):
                    for keepdim in (False, True):
                        args = (meta(*shape, dtype=dtype, channels_last=channels_last), dims, keepdim)
                        try:
                            expected = metadata(func(*args))
                        except RuntimeError:
                            assert on_cpu(func, args, {}) is None  # the CPU kernel refuses it too
                            continue
                        assert metadata(on_cpu(func, args, {})) == expected, (func, shape, dtype, dims, keepdim)
                        compared += 1
    assert compared > 300


def metadata(out):
    outs = out if isinstance(out, tuple) else (out,)
    return [(t.device.type, t.shape, t.stride(), t.dtype, t.untyped_storage().nbytes()) for t in outs]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: str(c[0]))
def test_stand_in_result_matches_the_meta_kernel(call):
    func, args, kwargs = (*call, {})[:3]
    assert can_stand_in(func)
    stood_in = on_cpu(func, args, kwargs)
    assert stood_in is not None, "the call was small enough to stand in"
    assert metadata(stood_in) == metadata(func(*args, **kwargs))


def test_errors_and_big_or_real_tensors_are_left_to_the_meta_kernel():
    half = (meta(2, 4, 3, dtype=torch.float16), *(meta(4, dtype=torch.float16),) * 4, False, 0.1, 1e-5)
    assert on_cpu(aten.native_batch_norm.default, half, {}) is None  # CPU saves half statistics, meta float32
    assert on_cpu(aten.add.Tensor, (meta(2, 3), meta(4, 3)), {}) is None  # not broadcastable: meta says so
    assert on_cpu(aten.pow.Tensor_Scalar, (meta(3, dtype=torch.int64), -1), {}) is None  # CPU refuses
    assert on_cpu(aten.relu.default, (meta(1024, 1024),), {}) is None  # 4 MiB: over the limit
    assert on_cpu(aten.add.Tensor, (meta(3), torch.ones(3)), {}) is None  # a real tensor among them
    assert not can_stand_in(aten.nonzero.default) and not can_stand_in(aten.mm.default)


def test_in_place_ops_are_checked_by_the_cpu_kernel():
    assert can_stand_in_place(aten.hardswish_.default) and can_stand_in_place(aten.add_.Tensor)
    assert not can_stand_in_place(aten.copy_.default) and not can_stand_in_place(aten.index_put_.default)
    assert in_place_on_cpu(aten.add_.Tensor, (meta(2, 3), meta(3)), {})
    assert not in_place_on_cpu(aten.add_.Tensor, (meta(1, 3), meta(2, 3)), {})  # would need to grow self
    with pytest.raises(RuntimeError):
        aten.add_.Tensor(meta(1, 3), meta(2, 3))  # and the meta kernel, which runs then, raises as before


def test_meta_summary_is_the_same_with_and_without_stand_ins(monkeypatch):
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with_stand_ins = modscope.summary(model, inputs=x, device="meta").forward
    monkeypatch.setattr(meta_stand_ins, "STAND_IN_MAX_BYTES", 0)
    without = modscope.summary(model, inputs=x, device="meta").forward
    assert with_stand_ins.modules == without.modules and with_stand_ins.flops_total == without.flops_total
    assert with_stand_ins.memory == without.memory
    on_cpu_report = modscope.summary(model, inputs=x).forward
    assert [(m.name, m.first, m.flops) for m in with_stand_ins.modules] == [
        (m.name, m.first, m.flops) for m in on_cpu_report.modules
    ]


def test_stand_ins_run_no_cpu_kernel_for_big_ops(monkeypatch):
    calls = []
    monkeypatch.setattr(meta_stand_ins, "_stand_in", lambda t: calls.append(t) or torch.ones(()))
    model = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU())
    modscope.summary(model, inputs=torch.randn(512, 2048), device="meta")
    assert calls == []

