"""Repeated meta-device ops answered from a per-pass cache: the same results as running every op."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.decoder import Decoder
from examples import catalog
from modscope.collect.forward.flops import FlopCounter
from modscope.collect.forward.meta import meta_copy
from modscope.collect.forward.meta_cache import MetaResultCache, can_cache
from modscope.collect.forward.run import run_pass
from modscope.load.inputs import build_inputs

aten = torch.ops.aten


def meta(*shape, **kwargs):
    return torch.empty(*shape, device="meta", **kwargs)


@pytest.mark.parametrize(
    "op, expected",
    [
        (aten.add.Tensor, True),
        (aten.mm.default, True),
        (aten.native_layer_norm.default, True),
        (aten.view.default, False),  # its result aliases the input
        (aten.add_.Tensor, False),  # writes its input
        (aten.add.out, False),  # writes out=
        (aten.bernoulli.default, False),  # random
        (aten.nonzero.default, False),  # output shape depends on values
        (aten.split.Tensor, False),  # returns views, as a list
        (aten._efficientzerotensor.default, True),  # but its zero-tensor results are never remembered (below)
    ],
    ids=str,
)
def test_only_functional_ops_returning_tensors_are_cached(op, expected):
    assert can_cache(op) is expected


def test_the_key_holds_everything_a_meta_kernel_can_see():
    cache = MetaResultCache()
    x = meta(4, 6)
    key = cache.key(1, (x, 2), None)
    assert key is not None and key == cache.key(1, (meta(4, 6), 2), None)
    different = [
        cache.key(2, (x, 2), None),  # another op
        cache.key(1, (meta(6, 4).t(), 2), None),  # same shape, other strides
        cache.key(1, (meta(4, 6, dtype=torch.float16), 2), None),
        cache.key(1, (meta(4, 6, requires_grad=True), 2), None),
        cache.key(1, (x, True), None),  # True == 1 == 1.0, but not to a kernel
        cache.key(1, (x, 2.0), None),
        cache.key(1, (x, 2), {"alpha": 2}),
        cache.key(1, (meta(10, 6)[4:8], 2), None),  # storage offset
        cache.key(1, (meta(4, 6, dtype=torch.complex64).conj(), 2), None),  # conjugate flag (complex dtype too)
        cache.key(1, (torch._efficientzerotensor((4, 6), device="meta"), 2), None),  # a zero tensor
    ]
    with torch.no_grad():
        different.append(cache.key(1, (x, 2), None))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        different.append(cache.key(1, (x, 2), None))
    finally:
        torch.set_default_dtype(previous)
    assert None not in different and len({key, *different}) == len(different) + 1


@pytest.mark.parametrize(
    "args",
    [
        (torch.empty(2, 3), 1),  # a real tensor: values matter
        (meta(2, 3), object()),  # an argument the key cannot describe
        (torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (2, 3), check_invariants=True).to("meta"), 1),
    ],
    ids=["cpu", "object", "sparse"],
)
def test_calls_the_key_cannot_describe_are_not_cached(args):
    assert MetaResultCache().key(1, args, None) is None


def test_a_remembered_result_is_replayed_with_the_same_metadata_in_fresh_storage():
    cache = MetaResultCache()
    x, w, b = meta(2, 8, 16).transpose(0, 1), meta(16), meta(16)
    out = aten.native_layer_norm.default(x, [16], w, b, 1e-5)
    key = cache.key(7, (x, [16], w, b, 1e-5), None)
    assert cache.remember(key, (x, [16], w, b, 1e-5), None, out, 0)
    replayed = cache.replay(cache.entries[key])
    assert type(replayed) is tuple and len(replayed) == 3
    for got, want in zip(replayed, out):
        assert (got.shape, got.stride(), got.dtype, got.is_meta) == (want.shape, want.stride(), want.dtype, True)
        assert got.untyped_storage().nbytes() == want.untyped_storage().nbytes()
        assert got.untyped_storage()._cdata != want.untyped_storage()._cdata
    assert cache.reused == 1


@pytest.mark.parametrize(
    "make_out",
    [
        lambda x: torch.empty(2, 3),  # not on meta
        lambda x: x,  # the input itself
        lambda x: meta(10)[2:8],  # a view with an offset into a larger storage
        lambda x: meta(0).set_(meta(100).untyped_storage(), 0, (2, 3), (3, 1)),  # a storage larger than needed
        lambda x: [meta(2), meta(2)],  # a list
        lambda x: torch._efficientzerotensor((2, 3), device="meta"),  # a zero tensor (immutable, all zeros)
        lambda x: meta(2, 3, dtype=torch.complex64).conj(),  # flagged conjugate
    ],
    ids=["cpu", "input", "view", "padded", "list", "zerotensor", "conj"],
)
def test_results_that_cannot_be_reproduced_exactly_are_run_for_real(make_out):
    cache = MetaResultCache()
    x = meta(2, 3)
    key = cache.key(1, (x,), None)
    assert not cache.remember(key, (x,), None, make_out(x), 0)
    assert key not in cache.entries


def test_flags_passed_on_to_results_are_followed():
    # dot of a conjugated vector returns a conjugated result: it must not be answered with the plain one
    x, y = meta(4, dtype=torch.complex64), meta(4, dtype=torch.complex64)
    with torch.no_grad(), FlopCounter(reuse_meta=True):
        plain = [torch.vdot(x, y) for _ in range(2)]
        conjugated = torch.vdot(x, y.conj())
    assert [t.is_conj() for t in plain] == [False, False]
    with torch.no_grad():
        assert conjugated.is_conj() == torch.vdot(x, y.conj()).is_conj()


CALLS = {"n": 0}


@torch.library.custom_op("modscope_test::grow", mutates_args=())
def grow(k: torch.Tensor) -> torch.Tensor:
    CALLS["n"] += 1
    return k.new_empty(CALLS["n"], k.shape[1])


@grow.register_fake
def _(k):
    CALLS["n"] += 1  # a fake kernel that reads state of its own, like a KV length kept on the side
    return k.new_empty(CALLS["n"], k.shape[1])


def test_custom_ops_are_never_cached():
    assert not can_cache(torch.ops.modscope_test.grow.default)
    CALLS["n"] = 0
    k = meta(1, 8)
    with torch.no_grad(), FlopCounter(reuse_meta=True):
        shapes = [tuple(grow(k).shape) for _ in range(3)]
    assert shapes == [(1, 8), (2, 8), (3, 8)]


def test_passes_without_flops_run_no_dispatch_mode_unless_reusing_meta_results():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    from modscope.collect.forward.meta_stand_ins import MetaResultMode

    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(_get_current_dispatch_mode())
            return x * 2

    inputs = build_inputs(["2,3"]).to("meta")
    run_pass(Probe(), inputs, flops=False)
    run_pass(Probe(), inputs, flops=False, reuse_meta=True)
    run_pass(Probe(), inputs, flops=True, reuse_meta=True)
    assert seen[0] is None and isinstance(seen[1], MetaResultMode)
    assert seen[2] is not None and not isinstance(seen[2], MetaResultMode)


def test_meta_result_mode_leaves_torch_cond_as_with_no_mode():
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda x: x @ self.w @ self.w, lambda x: x @ self.w, (x,))

    model, inputs = Branching().to("meta"), build_inputs(["2,4"]).to("meta")
    outcomes = []
    for reuse in (False, True):
        result = run_pass(model, inputs, flops=False, record=False, training=True, grad=True, reuse_meta=reuse)
        outcomes.append((type(result.error), str(result.error), None if result.output is None else result.output.shape))
    assert outcomes[0] == outcomes[1]


def test_an_op_whose_result_aliases_its_input_is_run_for_real_from_then_on():
    x = meta(4, 6)
    with torch.no_grad(), FlopCounter(reuse_meta=True) as counter:
        aten._unsafe_view.default(x, [24])  # its schema promises a fresh tensor; it returns a view
        second = aten._unsafe_view.default(x, [24])
    assert second.untyped_storage()._cdata == x.untyped_storage()._cdata
    assert not counter.ops[id(aten._unsafe_view.default)].reusable and counter.meta_cache.reused == 0


class DefaultDtypeAndGradMode(nn.Module):
    """Makes the same factory call under two default dtypes, and the same op with and without grad mode."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        first = torch.ones(3, device=x.device)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            second = torch.ones(3, device=x.device)
        finally:
            torch.set_default_dtype(previous)
        with torch.enable_grad():
            tracked = x * self.scale
        return first, second, x * self.scale, tracked


def test_global_state_that_changes_inside_a_forward_is_followed():
    model = meta_copy(DefaultDtypeAndGradMode())
    with torch.no_grad(), FlopCounter(reuse_meta=True) as counter:
        first, second, untracked, tracked = model(meta(3))
    assert (first.dtype, second.dtype) == (torch.float32, torch.float64)
    assert tracked.requires_grad and not untracked.requires_grad
    assert counter.meta_cache.entries, "the cache was in use"


def test_repeated_blocks_are_answered_from_the_cache():
    def cache_after(layers: int) -> MetaResultCache:
        with torch.device("meta"):
            model = Decoder(vocab=100, d_model=32, n_layers=layers, n_heads=4, d_ff=64)
        with torch.no_grad(), FlopCounter(reuse_meta=True) as counter:
            model(torch.zeros(1, 16, dtype=torch.long, device="meta"))
        return counter.meta_cache

    two, four = cache_after(2), cache_after(4)
    assert len(four.entries) == len(two.entries), "blocks 3 and 4 add nothing new"
    per_block = (four.reused - two.reused) // 2
    assert per_block >= 10 and four.reused == two.reused + 2 * per_block


def _pass(model, inputs, reuse: bool, **kwargs):
    result = run_pass(model, inputs, reuse_meta=reuse, peak=True, **kwargs)
    return (
        result.modules, result.inputs, result.flops_total, result.uncounted_ops, result.peak_call_bytes,
        result.never_called, result.failure,
    )


EXAMPLES = [e for e in catalog.EXAMPLES if "needs_torchvision" not in e.notes]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_every_example_records_the_same_with_and_without_the_cache(example):
    model = meta_copy(example.build())
    inputs = build_inputs(example.inputs, [f"{k}={v}" for k, v in example.kwargs]).to("meta")
    assert _pass(model, inputs, True) == _pass(model, inputs, False)
    assert _pass(model, inputs, True, training=True, grad=True) == _pass(model, inputs, False, training=True, grad=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16", "convnext_tiny"])
def test_torchvision_models_record_the_same_with_and_without_the_cache(name):
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    inputs = build_inputs(["2,3,224,224"]).to("meta")
    assert _pass(model, inputs, True) == _pass(model, inputs, False)
    assert _pass(model, inputs, True, training=True, grad=True) == _pass(model, inputs, False, training=True, grad=True)
