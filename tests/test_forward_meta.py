"""Forward passes on the meta device: data-free copies, models built on meta, and real-tensor fallbacks."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
import torch.nn as nn

import modscope
import modscope.api.forward
from bench.decoder import decoder_tiny
from examples.d2l_blocks import Chimera, FixedHiddenMLP
from modscope.collect.forward.meta import meta_copy
from modscope.errors import ForwardError
from modscope.reports.forward import TensorMeta
from tests import forward_models as fm
from tests.contract import assert_unchanged, snapshot


def test_decoder_on_meta_matches_cpu():
    model = decoder_tiny()
    ids = torch.randint(0, 100, (2, 16))
    on_cpu = modscope.summary(model, inputs=ids).forward
    before = snapshot(model)
    on_meta = modscope.summary(model, inputs=ids, device="meta").forward
    assert_unchanged(model, before)
    # on CPU attention runs the flash kernel (counted with torch's SDPA formula), on meta the math path (two
    # counted batched matmuls): the same 4 * b * h * s^2 * d per layer either way
    assert "aten._scaled_dot_product_flash_attention_for_cpu" not in on_cpu.uncounted_ops
    assert on_meta.flops_total == on_cpu.flops_total
    with torch.no_grad(), FlopCounterMode(display=False) as bare:  # torch's own table: CPU attention as 0
        model.eval()(ids)
    assert on_cpu.flops_total - bare.get_total_flops() == 2 * 4 * 2 * 4 * 16 * 16 * 8
    assert [(m.name, m.first) for m in on_meta.modules] == [(m.name, m.first) for m in on_cpu.modules]
    assert on_meta.inputs.output == TensorMeta((2, 16, 100), "float32")
    assert on_meta.memory.activations > on_cpu.memory.activations > 0, "the math path also saves attention weights"
    assert on_meta.memory.params == on_cpu.memory.params
    assert on_meta.unused_parameters == ()


def test_model_built_on_meta_is_run_in_place_and_left_alone():
    with torch.device("meta"):
        model = decoder_tiny()
    before = snapshot(model)
    report = modscope.summary(model, inputs=torch.randint(0, 100, (1, 8)))  # device follows the model
    assert_unchanged(model, before)
    assert report.forward.device == "meta" and report.forward.fallbacks == ()
    assert report.forward.module("head").first.output == TensorMeta((1, 8, 100), "float32")
    assert all(p.is_meta for p in model.parameters())
    assert {w.code for w in report.warnings} == {"meta_tensor"}


def test_data_dependent_loop_falls_back_to_real_tensors_for_that_module():
    model = Chimera()
    x = torch.randn(2, 20)
    before = snapshot(model)
    forward = modscope.summary(model, inputs=x, device="meta").forward
    assert_unchanged(model, before)
    assert [f.module for f in forward.fallbacks] == ["2"]
    fallback = forward.fallbacks[0]
    assert fallback.type == "FixedHiddenMLP" and "meta" in fallback.reason and "CPU" in fallback.action
    assert forward.inputs.output == TensorMeta((), "float32")
    assert forward.module("2.linear").calls == 2
    assert forward.flops_total == modscope.summary(model, inputs=x).forward.flops_total
    assert forward.unused_parameters is None, "a fallback cuts the autograd graph: unknown, not 'none'"
    assert not any(op.startswith(("aten.normal", "aten.empty")) for op in forward.uncounted_ops), "stand-ins are ours"
    assert forward.to_dict()["fallbacks"][0]["module"] == "2"


def test_fallback_on_a_model_built_on_meta_copies_it_first():
    with torch.device("meta"):
        model = FixedHiddenMLP()
    before = snapshot(model)
    forward = modscope.summary(model, inputs=torch.randn(2, 20), device="meta").forward
    assert_unchanged(model, before)
    assert [f.module for f in forward.fallbacks] == [""]
    assert model.linear.weight.is_meta and model.rand_weight.is_meta


def test_fallback_refused_when_the_module_is_too_big(monkeypatch):
    monkeypatch.setenv("MODSCOPE_META_FALLBACK_MAX_BYTES", "1024")
    with pytest.raises(ForwardError) as caught:
        modscope.summary(fm.DataDependentBig(), inputs=torch.randn(2, 64), device="meta")
    assert "meta" in str(caught.value) and caught.value.partial.forward.failure.module == ""
    assert caught.value.partial.forward.module("body").first.output == TensorMeta((2, 64), "float32")


def test_a_real_bug_is_not_mistaken_for_a_meta_limitation():
    with pytest.raises(ForwardError) as caught:
        modscope.summary(fm.Broken(), inputs=torch.randn(2, 10), device="meta")
    assert caught.value.partial.forward.fallbacks == ()
    assert caught.value.partial.forward.failure.module == "second"


def test_meta_copy_keeps_ties_and_touches_nothing():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    model[1].weight = model[0].weight
    model.register_buffer("scale", torch.ones(1))
    model.plain = torch.zeros(3)
    before = snapshot(model)
    copy = meta_copy(model)
    assert_unchanged(model, before)
    assert copy[1].weight is copy[0].weight and copy[0].weight.is_meta
    assert copy.scale.is_meta and copy.plain.is_meta and not model.plain.is_meta
    assert isinstance(copy[0].weight, nn.Parameter) and copy[0].weight.requires_grad
