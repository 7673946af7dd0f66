"""modscope.testing, save/load assertions: state_dict round trips through torch.save and safetensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

from examples.catalog import get
from modscope.errors import CheckpointError, UsageError
from modscope.testing import assert_state_dict_compatible, assert_state_dict_roundtrip
from tests.contract import failure, passes
from tests.testing_models import tiny_gpt


def test_roundtrip_passes_on_real_models_with_outputs():
    passes(assert_state_dict_roundtrip, torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    lenet = get("lenet")
    passes(assert_state_dict_roundtrip, lenet.build(), torch.randn(2, 1, 28, 28), factory=lenet.build)
    passes(assert_state_dict_roundtrip, get("dict_output").build(), torch.randn(1, 3, 32, 32))


def test_roundtrip_with_tied_weights_in_both_formats():
    ids = torch.randint(0, 1000, (2, 7))
    passes(assert_state_dict_roundtrip, tiny_gpt(), ids)
    passes(assert_state_dict_roundtrip, tiny_gpt(), ids, factory=tiny_gpt, formats=["safetensors"])


def test_roundtrip_fails_when_state_lives_outside_the_state_dict():
    example = get("fixed_hidden_mlp")  # keeps a random constant as a plain tensor attribute
    message = failure(assert_state_dict_roundtrip, example.build(), torch.randn(2, 20), factory=example.build)
    lines = message.splitlines()
    assert lines[0] == "FixedHiddenMLP does not survive a state_dict round trip"
    assert lines[1].startswith("  torch: output: 1 of 1 elements differ, max |diff| ")
    assert lines[2].startswith("  safetensors: output: 1 of 1 elements differ, max |diff| ")
    assert lines[3].startswith("  possible cause: rand_weight is a plain Tensor attribute (20, 20) on cpu")


def test_roundtrip_fails_when_a_fresh_model_is_tied_differently():
    message = failure(assert_state_dict_roundtrip, tiny_gpt(), factory=lambda: tiny_gpt(tie=False))
    assert "safetensors: RuntimeError: Error(s) in loading state_dict for TinyGPT:" in message
    # safetensors stores the shared matrix once, under the first name in sorted order (head.weight)
    assert 'Missing key(s) in state_dict: "tok.weight"' in message
    assert "torch:" not in message  # torch.save keeps both names, so the untied model loads fine


def test_roundtrip_fails_when_safetensors_drops_a_partial_view():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    model[2].weight.data = model[0].weight.data[:4]  # the head views part of the first layer's weight
    message = failure(assert_state_dict_roundtrip, model, torch.randn(2, 8))
    assert message.splitlines()[0] == "Sequential does not survive a state_dict round trip"
    # safetensors stores the shared memory once, under 0.weight; a fresh model has no view to restore 2.weight into
    assert 'safetensors: RuntimeError: Error(s) in loading state_dict for Sequential: Missing key(s) in state_dict: "2.weight"' in message
    assert "torch:" not in message


class ForgetfulNorm(nn.Module):
    """Keeps its scale in the state_dict but ignores it on load (a broken ``_load_from_state_dict``)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict = dict(state_dict)
        state_dict.pop(prefix + "scale", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_roundtrip_fails_when_loading_drops_a_value():
    model = ForgetfulNorm()
    with pytest.raises(AssertionError) as info:  # strict loading reports the key it dropped
        assert_state_dict_roundtrip(model, torch.randn(2, 4))
    message = str(info.value)
    assert 'torch: RuntimeError: Error(s) in loading state_dict for ForgetfulNorm: Missing key(s) in state_dict: "scale".' in message


def test_roundtrip_refuses_lazy_models_and_unknown_formats():
    lazy = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(AssertionError, match="cannot be saved: 2 tensor\\(s\\) are lazy"):
        assert_state_dict_roundtrip(lazy)
    with pytest.raises(UsageError, match="unknown \\['onnx'\\]"):
        assert_state_dict_roundtrip(get("lenet").build(), formats=["onnx"])


def test_compatible_passes_for_files_nested_checkpoints_dicts_and_models(tmp_path):
    model = torchvision.models.resnet18()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "last.ckpt")  # Lightning-style
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    passes(assert_state_dict_compatible, model, tmp_path / "last.ckpt")
    passes(assert_state_dict_compatible, model, str(tmp_path / "last.ckpt"), key="state_dict")
    passes(assert_state_dict_compatible, model, str(tmp_path / "model.safetensors"))
    passes(assert_state_dict_compatible, model, model.state_dict())
    passes(assert_state_dict_compatible, model, torchvision.models.resnet18())


def test_compatible_failure_suggests_stripping_a_ddp_prefix(tmp_path):
    model = torchvision.models.resnet18()
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    message = failure(assert_state_dict_compatible, model, str(path))
    lines = message.splitlines()
    assert lines[0] == f"{path} (torch) does not load into ResNet: 102 missing, 122 unexpected"
    assert lines[1] == "  suggestion: strip 'module.' in the checkpoint's keys (fixes 122 key(s); then it loads cleanly)"
    assert lines[2].startswith("  missing from the checkpoint (102): conv1.weight, bn1.weight, bn1.bias,")
    assert lines[2].endswith(" and 97 more")
    assert lines[3].startswith("  unexpected in the checkpoint (122): module.conv1.weight, ")


def test_compatible_failure_names_shape_mismatches_and_missing_keys():
    released = torchvision.models.resnet18().state_dict()
    model = torchvision.models.resnet18(num_classes=10)
    model.aux = nn.Linear(512, 2)
    message = failure(assert_state_dict_compatible, model, released)
    assert message.splitlines() == [
        "state dict (in memory) does not load into ResNet: 2 missing, 2 shape mismatch(es)",
        "  missing from the checkpoint (2): aux.weight, aux.bias",
        "  fc.weight: model (10, 512) vs checkpoint (1000, 512)",
        "  fc.bias: model (10,) vs checkpoint (1000,)",
    ]


def test_compatible_with_a_missing_file_says_to_create_it_without_modscope_frames(tmp_path):
    import traceback

    missing = tmp_path / "data" / "released.pt"
    with pytest.raises(FileNotFoundError) as caught:
        assert_state_dict_compatible(nn.Linear(2, 2), missing)
    assert f"no checkpoint at '{missing}'" in str(caught.value) and "torch.save(model.state_dict(), path)" in str(caught.value)
    assert caught.value.__suppress_context__  # no chained traceback through modscope's checkpoint readers
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "assert_state_dict_compatible" and "open_checkpoint" not in frames
    with pytest.raises(CheckpointError) as unreadable:  # a file that is there but not a checkpoint: its reason
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        assert_state_dict_compatible(nn.Linear(2, 2), tmp_path / "junk.pt")
    assert unreadable.value.__suppress_context__ and "junk.pt" in str(unreadable.value)
