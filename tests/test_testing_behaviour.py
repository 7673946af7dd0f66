"""modscope.testing, assertions that run the model: output shapes, determinism, side effects of a function."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
import torchvision

from examples.catalog import get
from modscope.testing import assert_deterministic, assert_output_shape, assert_unchanged_by
from tests.contract import failure, passes
from tests.testing_models import tiny_gpt


def test_output_shape_passes_with_wildcards_and_returns_the_output():
    model = torchvision.models.resnet18()
    x = torch.randn(2, 3, 64, 64)
    output = passes(assert_output_shape, model, x, (2, 1000))
    assert output.shape == (2, 1000)
    passes(assert_output_shape, model, x, (None, 1000))
    passes(assert_output_shape, model, x, torch.Size([2, 1000]))
    passes(assert_output_shape, get("image_with_metadata").build(), (torch.randn(1, 3, 32, 32), torch.randn(1, 8)), (1, 10))


def test_output_shape_failure_shows_got_and_expected():
    message = failure(assert_output_shape, torchvision.models.resnet18(), torch.randn(2, 3, 64, 64), (None, 10))
    assert message.splitlines() == [
        "ResNet output does not have the expected shape (got 2x1000)",
        "  output: shape (2, 1000), expected (*, 10)",
    ]
    message = failure(assert_output_shape, get("lenet").build(), torch.randn(1, 1, 28, 28), (10,))
    assert "output: shape (1, 10), expected (10,)" in message


def test_output_shape_tuple_outputs():
    model = get("two_heads").build()
    x = torch.randn(3, 3, 32, 32)
    passes(assert_output_shape, model, x, ((3, 10), (3, 4)))
    message = failure(assert_output_shape, model, x, ((None, 10), (None, 5)))
    assert "(got (3x10, 3x4))" in message
    assert "output[1]: shape (3, 4), expected (*, 5)" in message
    assert "output[0]" not in message
    assert "output: got (3x10, 3x4), expected a tensor of shape (3, 10)" in failure(
        assert_output_shape, model, x, (3, 10)
    )
    assert "expected 3 outputs" in failure(assert_output_shape, model, x, ((3, 10), (3, 4), (3,)))


def test_output_shape_dict_outputs():
    model = get("dict_output").build()
    x = torch.randn(1, 3, 32, 32)
    passes(assert_output_shape, model, x, {"logits": (1, 10), "embedding": (1, 32)})
    message = failure(assert_output_shape, model, x, {"logits": (1, 12), "features": (1, 32)})
    assert "output['logits']: shape (1, 10), expected (1, 12)" in message
    assert "output: missing key 'features'" in message
    assert "output: unexpected key 'embedding'" in message


def test_output_shape_rejects_a_malformed_expectation():
    with pytest.raises(TypeError, match="expected shape"):
        assert_output_shape(get("lenet").build(), torch.randn(1, 1, 28, 28), "1x10")


def test_output_shape_runs_in_eval_mode_and_keeps_batchnorm_statistics():
    model = torchvision.models.resnet18().train()
    passes(assert_output_shape, model, torch.randn(2, 3, 64, 64), (2, 1000))  # contract: buffers and mode unchanged
    assert model.training


def test_deterministic_passes_on_real_models_even_with_dropout_in_train_mode():
    passes(assert_deterministic, torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    passes(assert_deterministic, get("alexnet").build().train(), torch.randn(1, 1, 224, 224), runs=3)


class LayerDrop(nn.Module):
    """Skips each block at random, with Python's ``random`` and without checking ``self.training``: a bug."""

    def __init__(self, width: int = 8, depth: int = 6, p: float = 0.5):
        super().__init__()
        self.stem = nn.Linear(4, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth))
        self.head = nn.Linear(width, 2)
        self.p = p

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            if random.random() >= self.p:
                x = x + block(x)
        return self.head(x)


def test_deterministic_failure_names_the_output_and_the_first_diverging_module():
    random.seed(3)
    message = failure(assert_deterministic, LayerDrop(), torch.randn(2, 4))
    lines = message.splitlines()
    assert lines[0] == "LayerDrop is not deterministic: run 2 differs from run 1 (seed 0)"
    assert lines[1].startswith("  output: ") and "of 4 elements differ, max |diff|" in lines[1]
    # Python's random is seeded above, so which blocks ran is fixed: the runs part ways at the 5th module call
    assert lines[2] == "  the runs took different paths: call 5 was blocks.2.0 in run 1, blocks.1.0 in run 2"


class Counter(nn.Module):
    """A forward with hidden Python state: every call scales the output differently."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x) * self.calls


def test_deterministic_failure_points_at_the_stateful_module():
    model = nn.Sequential(nn.Linear(4, 4), Counter(), nn.ReLU())
    message = failure(assert_deterministic, model, torch.randn(3, 4))
    assert "output: " in message and "of 12 elements differ" in message
    assert "first module whose output differs: 1 (Counter), module call 3: output: " in message


def test_deterministic_tolerances():
    class Jitter(nn.Module):
        def forward(self, x):
            return x + 1e-7 * random.random()

    model = nn.Sequential(nn.Linear(4, 4), Jitter())
    assert "not deterministic" in failure(assert_deterministic, model, torch.randn(2, 4))
    passes(assert_deterministic, model, torch.randn(2, 4), atol=1e-6)


def evaluate(model: nn.Module, batches) -> float:
    """A validation loop done right: eval mode, no grad, mode restored."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        total = sum(float(model(x).sum()) for x in batches)
    model.train(was_training)
    return total


def evaluate_forgetting_eval(model: nn.Module, batches) -> float:
    """The classic bug: BatchNorm updates its running statistics during 'validation'."""
    with torch.no_grad():
        return sum(float(model(x).sum()) for x in batches)


def test_unchanged_by_passes_and_returns_the_result():
    model = torchvision.models.resnet18()
    batches = [torch.randn(2, 3, 64, 64)]
    result = passes(assert_unchanged_by, model, lambda m: evaluate(m, batches))
    assert isinstance(result, float)


def test_unchanged_by_failure_lists_changed_buffers_with_numbers():
    model = torchvision.models.resnet18().train()
    message = assert_fails_and_changes(model, lambda m: evaluate_forgetting_eval(m, [torch.randn(2, 3, 64, 64)]))
    lines = message.splitlines()
    assert lines[0] == "test_unchanged_by_failure_lists_changed_buffers_with_numbers.<locals>.<lambda> changed 60 of 122 parameters/buffers of ResNet"
    assert lines[1].startswith("  bn1.running_mean: 64 of 64 elements differ, max |diff| ")
    assert lines[3] == "  bn1.num_batches_tracked: 1 of 1 elements differ, max |diff| 1 (0 vs 1)"
    assert lines[-1] == "  ... and 51 more"


def test_unchanged_by_sees_replaced_moved_and_refrozen_tensors():
    model = get("nest_mlp").build()

    def surgery(m):
        m.linear.weight = nn.Parameter(m.linear.weight.detach().clone())  # same values, new object
        m.net[0].bias.requires_grad_(False)
        m.net[2].to(torch.float64)
        m.register_buffer("step", torch.zeros(()))

    message = assert_fails_and_changes(model, surgery)
    assert message.splitlines()[0] == (
        "test_unchanged_by_sees_replaced_moved_and_refrozen_tensors.<locals>.surgery changed 5 of 6 parameters/buffers of NestMLP"
    )
    assert "  step: added" in message
    assert "  net.0.bias: requires_grad True -> False" in message
    assert "  net.2.weight: dtype float32 vs float64" in message
    assert "  linear.weight: replaced by another tensor object" in message


def test_unchanged_by_reports_a_tied_matrix_once_and_sees_untying():
    model = tiny_gpt()
    before = model.tok.weight[0, 0].item()  # the float32 value itself: (x + 1) - 1 can differ in the 6th digit

    def nudge(m):
        with torch.no_grad():
            m.tok.weight[0, 0] += 1.0

    message = assert_fails_and_changes(model, nudge)
    assert message.splitlines()[1:] == ["  tok.weight: 1 of 64,000 elements differ, max |diff| 1 at [0, 0] "
                                        f"({before:.6g} vs {model.tok.weight[0, 0].item():.6g})"]

    def untie(m):
        m.head.weight = nn.Parameter(m.tok.weight.detach().clone())

    assert assert_fails_and_changes(tiny_gpt(), untie).splitlines()[1:] == [
        "  head.weight: replaced by another tensor object"
    ]


def assert_fails_and_changes(model, fn) -> str:
    with pytest.raises(AssertionError) as info:
        assert_unchanged_by(model, fn)
    return str(info.value)
