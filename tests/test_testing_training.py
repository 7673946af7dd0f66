"""modscope.testing, training-step assertions: gradients reach every trainable parameter, no NaN/Inf anywhere."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from examples.catalog import get
from modscope.errors import UsageError
from modscope.testing import assert_gradients_flow, assert_no_nonfinite
from tests import training_models as tm
from tests.contract import failure, passes

LABELS = torch.tensor([1, 3])


def cross_entropy(logits):
    return F.cross_entropy(logits, LABELS)


def test_gradients_flow_through_real_models():
    passes(assert_gradients_flow, torchvision.models.resnet18().train(), torch.randn(2, 3, 64, 64), cross_entropy)
    passes(assert_gradients_flow, get("lenet").build(), torch.randn(2, 1, 28, 28))
    passes(assert_gradients_flow, get("resnet18_finetune").build(), torch.randn(2, 3, 64, 64))  # frozen: skipped
    passes(assert_gradients_flow, get("tiny_gpt").build(), torch.randint(0, 1000, (1, 16)))


def test_gradients_flow_failure_names_the_head_the_loss_forgot():
    model = get("two_heads").build()
    images = torch.randn(2, 3, 32, 32)

    def classification_only(outputs):
        logits, boxes = outputs
        return F.cross_entropy(logits, LABELS)

    message = failure(assert_gradients_flow, model, images, classification_only)
    lines = message.splitlines()
    assert lines[0].startswith(
        "2 of 8 trainable parameter tensors of TwoHeads get no usable gradient (loss classification_only = "
    )
    assert lines[1:] == [
        "  box_head.weight (Linear, 64 elements): no gradient reached it (not used in forward, or cut off by "
        ".detach() / torch.no_grad())",
        "  box_head.bias (Linear, 4 elements): no gradient reached it (not used in forward, or cut off by "
        ".detach() / torch.no_grad())",
    ]
    passes(assert_gradients_flow, model, images, classification_only, allow={"box_head"})


def test_gradients_flow_failure_for_a_zero_initialised_head():
    model = torchvision.models.resnet18(num_classes=4)
    torch.nn.init.zeros_(model.fc.weight)  # a "safe" init that stops every gradient behind the head
    message = failure(assert_gradients_flow, model, torch.randn(2, 3, 64, 64), cross_entropy)
    assert message.splitlines()[0].startswith("60 of 62 trainable parameter tensors of ResNet get no usable gradient")
    assert "  conv1.weight (Conv2d, 9,408 elements): its gradient is exactly zero" in message
    assert "fc.weight" not in message and "fc.bias" not in message
    assert message.splitlines()[-1] == "  ... and 46 more"


def test_gradients_flow_when_nothing_carries_a_gradient():
    model = tm.DetachedBranch()
    message = failure(assert_gradients_flow, model, torch.randn(4, 8), lambda out: out.detach().sum())
    assert "4 of 4 trainable parameter tensors of DetachedBranch get no usable gradient (loss <lambda> = " in message
    assert message.splitlines()[1] == (
        "  the loss carries no gradient at all: is the forward under torch.no_grad(), or detached?"
    )


def test_gradients_flow_rejects_a_non_scalar_loss():
    with pytest.raises(UsageError, match="must return a scalar tensor"):
        assert_gradients_flow(get("lenet").build(), torch.randn(2, 1, 28, 28), lambda logits: logits)


def test_no_nonfinite_passes_on_real_models():
    passes(assert_no_nonfinite, torchvision.models.resnet18(), torch.randn(2, 3, 64, 64))
    passes(assert_no_nonfinite, get("unet").build(), torch.randn(1, 1, 64, 64), backward=False)


def test_no_nonfinite_names_the_module_that_made_the_nan():
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        model.layer2[0].bn1.running_var.fill_(-1.0)  # a corrupted checkpoint: sqrt(-1) inside BatchNorm
    message = failure(assert_no_nonfinite, model, torch.randn(2, 3, 64, 64))
    lines = message.splitlines()
    assert lines[0] == "ResNet produces NaN/Inf"
    assert lines[1] == "  forward: first non-finite in layer2.0.bn1 (BatchNorm2d), output, pass 1"
    assert lines[2] == "    its inputs are finite: this module's own computation produced the NaN/Inf"
    (output,) = [line for line in lines if line.lstrip().startswith("output")]
    assert "2x128x8x8" in output and "16384/0/0" in output  # every element of the output is NaN
    assert "  loss (mean): nan" in lines


def test_no_nonfinite_in_backward_only():
    model = tm.InfInBackward()
    x = torch.randn(4, 8)
    message = failure(assert_no_nonfinite, model, x)
    assert "  forward: every module output is finite" in message
    assert "  backward: first non-finite in sqrt (Sqrt), grad of input 0, pass 1" in message
    passes(assert_no_nonfinite, model, x, backward=False)


def test_no_nonfinite_in_the_loss():
    model = get("lenet").build()
    message = failure(assert_no_nonfinite, model, torch.randn(2, 1, 28, 28), lambda logits: logits.log().sum())
    assert "  loss (<lambda>): nan" in message
