"""The meta device on real models (#17): value checks on small tensors, nonzero, detection targets, the RNG."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import modscope
from examples.d2l_blocks import FixedHiddenMLP
from modscope.errors import ForwardError
from modscope.reports.forward import TensorMeta
from tests import meta_models as mm
from tests.contract import assert_unchanged, snapshot

CAP = "MODSCOPE_META_FALLBACK_MAX_BYTES"


def test_decoder_mask_checks_are_answered_without_running_the_backbone_on_real_tensors(monkeypatch):
    monkeypatch.setenv(CAP, "1024")  # the backbone (85 KiB) is over the cap, as a 1.9B one is over 1 GiB
    model, inputs = mm.tiny_llama(), mm.llama_inputs()
    before = snapshot(model)
    forward = modscope.summary(model, inputs=inputs, device="meta").forward
    assert_unchanged(model, before)
    assert [(f.module, f.type) for f in forward.fallbacks] == [("model", "LlamaModel")]
    assert "answered" in forward.fallbacks[0].action and "stayed on meta" in forward.fallbacks[0].action
    assert forward.unused_parameters is not None, "nothing ran on real tensors: the autograd graph is whole"
    assert forward.module("lm_head").first.output == TensorMeta((2, 8, 64), "float32")
    unmasked = modscope.summary(model, inputs={"input_ids": inputs["input_ids"]}, device="meta").forward
    assert unmasked.fallbacks == ()
    assert forward.flops_total == unmasked.flops_total
    assert [m.name for m in forward.modules if m.calls] == [m.name for m in unmasked.modules if m.calls]


def test_a_refused_fallback_says_it_was_refused_for_size(monkeypatch):
    monkeypatch.setenv(CAP, "64")  # FixedHiddenMLP's loop reads values derived from its weights (1.7 KiB)
    with pytest.raises(ForwardError) as caught:
        modscope.summary(FixedHiddenMLP(), inputs=torch.randn(2, 20), device="meta")
    message = str(caught.value)
    assert "did not retry it on real CPU tensors" in message and "fallback cap of 64 B" in message and CAP in message


def test_bad_fallback_cap_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(CAP, "lots")
    with pytest.raises(modscope.errors.UsageError, match=CAP):
        modscope.summary(FixedHiddenMLP(), inputs=torch.randn(2, 20), device="meta")


def test_cli_meta_pass_keeps_the_values_of_inputs_from_a_factory(cli):
    done = cli(
        "summary", "tests/meta_models.py:CheckedBoxes", "--device", "meta", "--inputs", "tests/meta_models.py:boxes",
        "--no-memory", "--json",
    )
    assert done.returncode == 0, done.stderr
    assert [f["module"] for f in json.loads(done.stdout)["forward"]["fallbacks"]] == ["", ""]


def test_cli_inputs_for_meta_are_drawn_on_cpu_when_small():
    from modscope.load.inputs import build_inputs

    made = build_inputs(["2,8:int64[0,64)", "1,1,40000,1000"], ["attention_mask=2,8:int64[0,2)"], device="meta")
    assert not made.args[0].is_meta and not made.kwargs["attention_mask"].is_meta
    assert made.args[1].is_meta, "160 MB stays on meta: nothing allocated"
    assert int(made.kwargs["attention_mask"].min()) == 0 and int(made.kwargs["attention_mask"].max()) == 1


def test_nonzero_is_recognised_as_a_meta_limitation():
    model, x = mm.KeepPositive(), torch.randn(3, 4)
    forward = modscope.summary(model, inputs=x, device="meta").forward
    assert [(f.module, f.type) for f in forward.fallbacks] == [("", "KeepPositive")]
    assert "nonzero" in forward.fallbacks[0].reason
    assert forward.module("lin").first.output == TensorMeta((3, 4), "float32")


def test_a_fallback_runs_on_the_inputs_as_given_not_on_noise():
    forward = modscope.summary(mm.CheckedBoxes(), inputs=mm.boxes(), device="meta").forward
    assert [f.module for f in forward.fallbacks] == ["", ""]  # the check answered, then boolean indexing ran real
    assert "answered" in forward.fallbacks[0].action and "CPU" in forward.fallbacks[1].action


def test_detector_with_targets_on_meta_keeps_the_targets():
    model = mm.tiny_detector()
    images, targets = mm.detector_inputs()
    before = snapshot(model)
    forward = modscope.summary(model, inputs=(images, targets), device="meta", train_mode=True, memory=False).forward
    assert_unchanged(model, before)
    ran_real = [f.module for f in forward.fallbacks if "CPU" in f.action]
    assert "" not in ran_real and "rpn" in ran_real, "the root's box checks are answered on meta"
    assert forward.module("backbone").calls == 1 and forward.flops_total > 0


def test_meta_summary_leaves_the_torch_rng_alone():
    x = torch.randn(2, 20)
    first = modscope.summary(FixedHiddenMLP(), inputs=x, device="meta").forward  # and lazy imports settle
    assert [f.module for f in first.fallbacks] == [""], "weights are materialized between the passes"
    model = FixedHiddenMLP()
    state = torch.get_rng_state()
    modscope.summary(model, inputs=x, device="meta")
    assert torch.equal(torch.get_rng_state(), state)


def test_a_pass_leaves_the_numpy_rng_alone():
    x = torch.randn(2, 3)
    state = np.random.get_state()
    modscope.summary(mm.NumpyNoise(), inputs=x, device="meta")
    after = np.random.get_state()
    assert np.array_equal(after[1], state[1]) and after[2] == state[2]


def test_a_tensor_inside_a_slice_is_answered_from_its_twin():
    forward = modscope.summary(mm.SliceByLength(), inputs=(torch.randn(3, 8), torch.tensor(5)), device="meta").forward
    assert [f.module for f in forward.fallbacks] == [""] and "answered" in forward.fallbacks[0].action
    assert forward.module("lin").first.output == TensorMeta((5, 3), "float32")
