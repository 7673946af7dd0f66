"""Results of big meta calls by rule, for the ops whose meta kernels are Python and whose CPU kernels follow
a simple rule: too big for CPU stand-ins (``meta_stand_ins``), they would otherwise run torch's Python
decompositions, ~0.1-1 ms a call (a ConvNeXt block's layer norm, GELU and residual add, a ResNet's batch
norm and ``out += identity``). Convolutions, which are never stood in on CPU (that would compute them), are
answered by rule at any size: their meta kernel is Python too.

Each rule answers only where it is exact, and otherwise returns None for the meta kernel to answer: plain
meta tensors of one full-precision float dtype (float32 or float64; CPU and meta differ in the dtypes they
keep statistics in for half precision), and for pointwise ops row-major operands (TensorIterator then
gives a contiguous result of the broadcast shape; other layouts follow stride rules not imitated here).
tests/test_meta_rules.py holds every rule to the CPU kernel's shapes, strides and dtypes (the stride of a
size-1 dimension, which addresses nothing, is the contiguous one where CPU may copy the input's).
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

_aten = torch.ops.aten
_FULL_FLOATS = (torch.float32, torch.float64)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _ops(*names) -> frozenset:
    return frozenset(
        op for op in (getattr(getattr(_aten, name, None), overload, None) for name, overload in names) if op is not None
    )


def result(func, args: tuple, kwargs: dict | None):
    """The meta result of a big call by rule, or None."""
    if func is _CONVOLUTION:
        return None if kwargs else convolution_result(args)
    if func is _BATCH_NORM:
        return None if kwargs else batch_norm_result(args)
    if func is _LAYER_NORM:
        return None if kwargs else layer_norm_result(args)
    if func in _FLOAT_POINTWISE:
        return pointwise_result(func, args, kwargs)
    return None


def in_place_fits(func, args: tuple, kwargs: dict | None) -> bool:
    """Does this in-place call certainly succeed (its result then is ``args[0]`` itself)?"""
    return func in _FLOAT_IN_PLACE and not kwargs and _fits_in_place(args)



# functional ops defined for float32/float64 tensors that give a tensor of that dtype
_FLOAT_POINTWISE = _ops(
    ("add", "Tensor"), ("add", "Scalar"), ("sub", "Tensor"), ("sub", "Scalar"), ("mul", "Tensor"), ("mul", "Scalar"),
    ("div", "Tensor"), ("div", "Scalar"), ("gelu", "default"), ("silu", "default"), ("sigmoid", "default"),
    ("tanh", "default"), ("relu", "default"), ("hardswish", "default"), ("hardsigmoid", "default"), ("exp", "default"),
    ("neg", "default"), ("rsqrt", "default"), ("sqrt", "default"), ("erf", "default"), ("pow", "Tensor_Scalar"),
    ("leaky_relu", "default"), ("hardtanh", "default"), ("clamp_min", "default"),
)
_ALLOWED_KWARGS = {"approximate": ("none", "tanh"), "alpha": None}


def pointwise_result(func, args: tuple, kwargs: dict | None):
    """A contiguous empty tensor of the broadcast shape and the operands' dtype, when every tensor operand is a
    plain contiguous meta tensor of one float32/float64 dtype and every other argument a number."""
    for key, value in (kwargs or {}).items():
        if key not in _ALLOWED_KWARGS or (_ALLOWED_KWARGS[key] is not None and value not in _ALLOWED_KWARGS[key]):
            return None
        if _ALLOWED_KWARGS[key] is None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return None
    dtype, shapes = None, []
    for value in args:
        if isinstance(value, torch.Tensor):
            if not _plain_meta(value) or value.dtype not in _FULL_FLOATS or not _row_major(value):
                return None
            if dtype is None:
                dtype = value.dtype
            elif value.dtype != dtype:
                return None
            shapes.append(tuple(value.shape))
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
    if dtype is None:
        return None
    shape = _broadcast(shapes)
    return None if shape is None else torch.empty(shape, dtype=dtype, device="meta")


def _row_major(t: torch.Tensor) -> bool:
    """Strides exactly those ``torch.empty`` gives its shape, size-1 dimensions included: TensorIterator orders
    dimensions by every operand's strides, so a (1, 4) tensor with strides (1, 1) (a transposed (4, 1)), though
    ``is_contiguous()``, can make a broadcast result come out permuted."""
    expected = 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride())):
        if stride != expected:
            return False
        expected *= max(size, 1)
    return True


def _broadcast(shapes: list[tuple]) -> tuple | None:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        sizes = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


_CONVOLUTION = getattr(getattr(_aten, "convolution", None), "default", None)
#: ops with a rule whatever their size (a convolution is never stood in on CPU: that would compute it)
RULED = frozenset({_CONVOLUTION} - {None})


def convolution_result(args: tuple):
    """``convolution``'s result by shape arithmetic, for a batched float32/float64 input and weight that are
    both row-major (CPU then answers row-major too; torch's meta kernel for it is Python, ~0.1 ms a call, and
    gives a row-major result even where CPU keeps channels-last). None for anything CPU would refuse or this
    rule does not cover: the meta kernel then answers, or raises as CPU would."""
    if len(args) != 9:
        return None
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = args
    if not (_plain_meta(x) and _plain_meta(w)) or x.dtype not in _FULL_FLOATS or w.dtype != x.dtype:
        return None
    if not (_row_major(x) and _row_major(w)) or x.dim() != w.dim() or x.dim() not in (3, 4, 5):
        return None
    n = x.dim() - 2
    numbers = (stride, padding, dilation, output_padding)
    if not all(isinstance(v, (list, tuple)) and len(v) == n and all(type(i) is int for i in v) for v in numbers):
        return None
    if type(groups) is not int or groups < 1 or type(transposed) is not bool or min(x.shape) < 1 or min(w.shape) < 1:
        return None
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or min(output_padding) < 0:
        return None
    kernel = w.shape[2:]
    if transposed:
        if n == 3:  # CPU's slow_conv_transpose3d can hand back a view of a bigger buffer (what autograd keeps)
            return None
        channels_in, channels_out = w.shape[0], w.shape[1] * groups
        if any(p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
            return None
        sizes = [(i - 1) * s - 2 * p + d * (k - 1) + o + 1
                 for i, s, p, d, k, o in zip(x.shape[2:], stride, padding, dilation, kernel, output_padding)]
    else:
        channels_in, channels_out = w.shape[1] * groups, w.shape[0]
        if channels_out % groups or any(output_padding):
            return None
        sizes = [(i + 2 * p - d * (k - 1) - 1) // s + 1
                 for i, s, p, d, k in zip(x.shape[2:], stride, padding, dilation, kernel)]
    if x.shape[1] != channels_in or channels_in % groups or min(sizes) < 1:
        return None
    if b is not None and (not _plain_meta(b) or b.dtype != x.dtype or tuple(b.shape) != (channels_out,)):
        return None
    return torch.empty((x.shape[0], channels_out, *sizes), dtype=x.dtype, device="meta")


_LAYER_NORM = getattr(getattr(_aten, "native_layer_norm", None), "default", None)


def layer_norm_result(args: tuple):
    """``native_layer_norm``'s results by the CPU kernel's rule: the output contiguous with the input's shape
    (CPU normalises a contiguous copy of any input), the mean and rstd of shape ``input.shape[:axis]`` followed
    by ones, in the input's dtype; for float32/float64 inputs whose weight and bias are None or of that dtype
    and of the normalised shape."""
    x, normalized, *rest = args[:4]
    if not _plain_meta(x) or x.dtype not in _FULL_FLOATS:
        return None
    normalized = tuple(normalized)
    axis = x.dim() - len(normalized)
    if not normalized or axis < 0 or tuple(x.shape[axis:]) != normalized:
        return None
    for t in rest:
        if t is not None and (not _plain_meta(t) or t.dtype != x.dtype or tuple(t.shape) != normalized):
            return None
    stats = tuple(x.shape[:axis]) + (1,) * len(normalized)
    return (
        torch.empty(x.shape, dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=x.dtype, device="meta"),
    )


_BATCH_NORM = getattr(getattr(_aten, "native_batch_norm", None), "default", None)


def batch_norm_result(args: tuple):
    """``native_batch_norm``'s results for big meta inputs, by the CPU kernel's rule (too big for stand-ins; torch's
    meta kernel for it is a Python decomposition, ~1 ms a call): the output is dense in the input's suggested
    memory format (CPU's ``empty_like(input, input.suggest_memory_format())``; the decomposition keeps any
    permutation instead), the saved mean and invstd are (C,) in the input's dtype (also in eval, as on meta).
    None, for the meta kernel to answer, unless the input is float32/float64 and every other tensor is None or
    a plain (C,) meta tensor of that dtype (CPU refuses mixed dtypes, which the decomposition accepts)."""
    x, *rest = args[:5]
    if not _plain_meta(x) or x.dtype not in _FULL_FLOATS or x.dim() < 2 or x.numel() == 0:
        return None  # (CPU refuses an empty input)
    channels = x.shape[1]
    for t in rest:
        if t is not None and (not _plain_meta(t) or t.dtype != x.dtype or tuple(t.shape) != (channels,)):
            return None
    form = torch.contiguous_format if x.is_contiguous() else suggest_memory_format(x)  # (1, C, 1, 1) is both
    out = torch.empty(x.shape, dtype=x.dtype, device="meta", memory_format=form)
    return out, torch.empty(channels, dtype=x.dtype, device="meta"), torch.empty(channels, dtype=x.dtype, device="meta")


# in-place ops defined for every float32/float64 tensor whose other tensor operands are of its dtype and
# broadcast to its shape: such a call always succeeds and returns its first argument
_FLOAT_IN_PLACE = _ops(
    ("add_", "Tensor"), ("add_", "Scalar"), ("sub_", "Tensor"), ("sub_", "Scalar"), ("mul_", "Tensor"),
    ("mul_", "Scalar"), ("div_", "Tensor"), ("div_", "Scalar"), ("relu_", "default"), ("sigmoid_", "default"),
    ("tanh_", "default"), ("hardswish_", "default"), ("hardsigmoid_", "default"), ("silu_", "default"),
    ("hardtanh_", "default"), ("leaky_relu_", "default"), ("elu_", "default"), ("neg_", "default"),
    ("exp_", "default"), ("clamp_min_", "default"),
)


def _fits_in_place(args: tuple) -> bool:
    """The first argument is a plain float32/float64 meta tensor and every other tensor argument a plain meta
    tensor of its dtype whose shape broadcasts to the first one's (so nothing grows and nothing is cast)."""
    self = args[0] if args else None
    if not isinstance(self, torch.Tensor) or not _plain_meta(self) or self.dtype not in _FULL_FLOATS:
        return False
    if torch._debug_has_internal_overlap(self) != 0:  # an expanded self: CPU refuses to write it
        return False
    shape = self.shape
    own = self.untyped_storage()._cdata
    for other in args[1:]:
        if isinstance(other, torch.Tensor):
            if not _plain_meta(other) or other.dtype != self.dtype:
                return False
            if other is not self and other.untyped_storage()._cdata == own:  # may overlap self partly: CPU refuses
                return False
            if other.dim() > len(shape) or any(
                size != 1 and size != shape[len(shape) - other.dim() + i] for i, size in enumerate(other.shape)
            ):
                return False
        elif not isinstance(other, (int, float, bool)) or isinstance(other, bool):
            return False
    return True


def _plain_meta(t) -> bool:
    return (
        type(t) in _PLAIN and t.is_meta and t.layout is torch.strided and not t.is_conj() and not t.is_neg()
        and not t._is_zerotensor()
    )
