"""Big meta calls answered by rule (``collect/forward/meta_rules.py``) give exactly what the CPU kernel gives:
shapes, strides and dtypes, checked on real CPU tensors."""
from __future__ import annotations

import itertools

import pytest
import torch

from modscope.collect.forward import meta_rules

aten = torch.ops.aten


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


def metadata(out):
    outs = out if isinstance(out, tuple) else (out,)
    return [(t.device.type, t.shape, t.stride(), t.dtype, t.untyped_storage().nbytes()) for t in outs]


def _layouts(shape, dtype=torch.float32):
    """The same values in several layouts: contiguous, transposed, sliced, channels-last where 4-d."""
    g = torch.Generator().manual_seed(0)
    made = [torch.rand(shape, dtype=dtype, generator=g) + 0.5]
    if len(shape) >= 2:
        made.append(torch.rand(shape[::-1], dtype=dtype, generator=g).permute(*reversed(range(len(shape)))))
        made.append(torch.rand((*shape[:-1], shape[-1] * 2), dtype=dtype, generator=g)[..., ::2])
    if len(shape) == 4:
        made.append(made[0].to(memory_format=torch.channels_last))
    return made


def _addressing(t):
    """Shape, dtype, and strides of the dimensions that address something (a size-1 dimension's stride is
    arbitrary: CPU copies the input's there, the rule writes the contiguous one)."""
    return t.shape, tuple(st for st, n in zip(t.stride(), t.shape) if n != 1), t.dtype, t.untyped_storage().nbytes()


def _on_meta(args):
    return tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)


BATCH_NORM_INPUTS = [
    lambda: torch.randn(2, 3, 4, 5),
    lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    lambda: torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d),
    lambda: torch.randn(4, 3),
    lambda: torch.randn(4, 3, 7, dtype=torch.float64),
    lambda: torch.randn(2, 3, 4, 10)[..., ::2],  # not dense
    lambda: torch.randn(2, 5, 4, 3).transpose(1, 3),  # permuted: CPU answers in contiguous format, meta kept it
    lambda: torch.randn(1, 3, 1, 1).to(memory_format=torch.channels_last),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("make", BATCH_NORM_INPUTS)
def test_big_batch_norm_results_follow_the_cpu_kernel(make, training):
    x = make()
    c = x.shape[1]
    stats = [torch.rand(c, dtype=x.dtype) + 0.5 for _ in range(4)]
    real = aten.native_batch_norm.default(x, *stats, training, 0.1, 1e-5)
    args = (x.to("meta"), *(t.to("meta") for t in stats), training, 0.1, 1e-5)
    ruled = meta_rules.batch_norm_result(args)
    expected = metadata(real)
    if not training:  # CPU keeps no statistics in eval; meta's kernel (and the rule) keep (C,) as in training
        expected[1:] = metadata(meta_rules.batch_norm_result(args))[1:]
        assert metadata(aten.native_batch_norm.default(*args))[1:] == expected[1:]
    assert [m[1:] for m in metadata(ruled)] == [m[1:] for m in expected]


def test_big_batch_norm_rule_leaves_mixed_and_half_dtypes_to_the_meta_kernel():
    mixed = (meta(2, 3, 4, dtype=torch.float64), *(meta(3),) * 4, True, 0.1, 1e-5)
    half = (meta(2, 3, 4, dtype=torch.float16), *(meta(3, dtype=torch.float16),) * 4, True, 0.1, 1e-5)
    wrong = (meta(2, 3, 4), meta(4), None, None, None, True, 0.1, 1e-5)
    assert all(meta_rules.batch_norm_result(a) is None for a in (mixed, half, wrong))


def test_the_in_place_rule_agrees_with_the_cpu_kernel():
    # big in-place float ops are accepted by rule: every call the rule accepts, the CPU kernel accepts too
    import itertools

    from modscope.collect.forward.meta_rules import _FLOAT_IN_PLACE, _fits_in_place

    shapes = [(2, 3, 4), (3, 4), (1, 4), (4,), (1, 1, 1), (2, 1, 4), (5,), (2, 3, 5), ()]
    accepted = 0
    for func, dtype, self_shape, other_shape in itertools.product(
        sorted(_FLOAT_IN_PLACE, key=str), [torch.float32, torch.float64, torch.float16], shapes[:3], shapes
    ):
        required = [a for a in func._schema.arguments[1:] if not a.kwarg_only and not a.has_default_value()]
        others = tuple(
            torch.rand(other_shape, dtype=dtype) if a.type.kind() == "TensorType" else 0.5 for a in required
        )
        meta_args = (torch.empty(self_shape, dtype=dtype, device="meta"),
                     *(o.to("meta") if isinstance(o, torch.Tensor) else o for o in others))
        if not _fits_in_place(meta_args):
            continue
        func(torch.rand(self_shape, dtype=dtype) + 0.1, *others)  # raises if the rule was wrong
        accepted += 1
    assert accepted > 100



SHAPES = [(2, 3, 4, 5), (3, 4), (1, 4), (4,), (1, 3, 1, 1), (2, 1, 4, 1), (5,), ()]


def test_pointwise_results_follow_the_cpu_kernel():
    answered = refused = 0
    for func in sorted(meta_rules._FLOAT_POINTWISE, key=str):
        tensors = [a for a in func._schema.arguments if a.type.kind() == "TensorType"]
        for dtype, first, second in itertools.product([torch.float32, torch.float64, torch.float16], SHAPES, SHAPES):
            for x in _layouts(first, dtype):
                if len(tensors) == 2:
                    others = _layouts(second, dtype)
                elif func._schema.arguments[1:2] and func._schema.arguments[1].type.kind() == "NumberType":
                    others = [2]
                else:
                    others = [None]
                for other in others:
                    args = (x,) if other is None else (x, other)
                    try:
                        real = func(*args)
                    except RuntimeError:  # not broadcastable: the rule must not answer either
                        assert meta_rules.pointwise_result(func, _on_meta(args), {}) is None
                        continue
                    ruled = meta_rules.pointwise_result(func, _on_meta(args), {})
                    if ruled is None:
                        refused += 1
                        continue
                    assert _addressing(ruled) == _addressing(real), (func, args)
                    answered += 1
    assert answered > 1000 and refused > 1000  # contiguous float32/64 calls answered, the rest left to meta


def test_pointwise_keyword_arguments_the_rule_knows():
    x = meta(2, 3)
    assert meta_rules.pointwise_result(aten.gelu.default, (x,), {"approximate": "tanh"}) is not None
    assert meta_rules.pointwise_result(aten.add.Tensor, (x, x), {"alpha": 2}) is not None
    assert meta_rules.pointwise_result(aten.div.Tensor_mode, (x, x), {"rounding_mode": "floor"}) is None
    assert meta_rules.pointwise_result(aten.add.Tensor, (x, meta(2, 3, dtype=torch.float64)), {}) is None
    assert meta_rules.pointwise_result(aten.add.Tensor, (x, torch.ones(2, 3)), {}) is None  # a real tensor


LAYER_NORM_CASES = [((2, 5, 8), (8,)), ((3, 4, 6), (4, 6)), ((7, 8), (8,)), ((2, 3, 4, 5), (5,))]


@pytest.mark.parametrize("shape, normalized", LAYER_NORM_CASES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_results_follow_the_cpu_kernel(shape, normalized, affine, dtype):
    for x in _layouts(shape, dtype):
        weight = torch.rand(normalized, dtype=dtype) if affine else None
        bias = torch.rand(normalized, dtype=dtype) if affine else None
        args = (x, list(normalized), weight, bias, 1e-5)
        real = aten.native_layer_norm.default(*args)
        ruled = meta_rules.layer_norm_result(_on_meta(args))
        assert [m[1:] for m in metadata(ruled)] == [m[1:] for m in metadata(real)]


def test_layer_norm_rule_leaves_other_calls_to_the_meta_kernel():
    assert meta_rules.layer_norm_result((meta(2, 8, dtype=torch.bfloat16), [8], None, None, 1e-5)) is None
    assert meta_rules.layer_norm_result((meta(2, 8), [8], meta(8, dtype=torch.float64), None, 1e-5)) is None
    assert meta_rules.layer_norm_result((meta(2, 8), [4], None, None, 1e-5)) is None


def test_convolution_results_follow_the_cpu_kernel():
    answered = refused = 0
    g = torch.Generator().manual_seed(0)
    for dims, transposed, stride, padding, dilation, groups, dtype, bias in itertools.product(
        (1, 2, 3), (False, True), (1, 2), (0, 1, 3), (1, 2), (1, 2), (torch.float32, torch.float64), (False, True)
    ):
        channels_in, channels_out, size, kernel = 4, 6, 7, 3
        x = torch.rand((2, channels_in, *(size,) * dims), dtype=dtype, generator=g)
        shape = (channels_in, channels_out // groups) if transposed else (channels_out, channels_in // groups)
        w = torch.rand((*shape, *(kernel,) * dims), dtype=dtype, generator=g)
        b = torch.rand(channels_out, dtype=dtype, generator=g) if bias else None
        for output_padding in ((0,), (1,)) if transposed else ((0,),):
            args = (x, w, b, [stride] * dims, [padding] * dims, [dilation] * dims, transposed,
                    list(output_padding) * dims, groups)
            try:
                real = aten.convolution.default(*args)
            except RuntimeError:  # e.g. an output padding CPU refuses: the rule must not answer either
                assert meta_rules.convolution_result(_on_meta(args)) is None
                refused += 1
                continue
            ruled = meta_rules.convolution_result(_on_meta(args))
            if dims == 3 and transposed:  # left to the meta kernel (see the rule)
                assert ruled is None
                continue
            assert ruled is not None, args[3:]
            assert metadata(ruled)[0][1:] == metadata(real)[0][1:], args[3:]
            answered += 1
    assert answered > 300 and refused > 10


def test_convolution_rule_leaves_other_layouts_and_bad_calls_to_the_meta_kernel():
    x, w = meta(1, 4, 8, 8), meta(6, 4, 3, 3)
    ok = (x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    assert meta_rules.convolution_result(ok) is not None
    channels_last = x.to(memory_format=torch.channels_last)  # CPU keeps channels-last: not imitated
    assert meta_rules.convolution_result((channels_last, *ok[1:])) is None
    assert meta_rules.convolution_result((meta(1, 5, 8, 8), *ok[1:])) is None  # channels do not match
    assert meta_rules.convolution_result((meta(1, 4, 2, 2), *ok[1:])) is None  # kernel larger than the input
    assert meta_rules.convolution_result((x, meta(6, 4, 3, 3, dtype=torch.float64), *ok[2:])) is None


def test_rules_refuse_what_the_cpu_kernel_refuses():
    expanded = meta(1, 4).expand(3, 4)  # writing it would write one element several times: CPU refuses
    assert not meta_rules.in_place_fits(aten.add_.Scalar, (expanded, 1.0), {})
    a = meta(5)
    assert not meta_rules.in_place_fits(aten.add_.Tensor, (a[1:], a[:-1]), {})  # partial overlap: CPU refuses
    assert meta_rules.in_place_fits(aten.add_.Tensor, (a, a), {})  # the same tensor: fine
    assert meta_rules.batch_norm_result((meta(2, 0, 4), None, None, None, None, True, 0.1, 1e-5)) is None
    assert meta_rules.layer_norm_result((meta(2, 4), [], None, None, 1e-5)) is None
