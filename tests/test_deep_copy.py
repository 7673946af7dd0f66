"""``deep_copy`` (the iterative module copy behind meta copies and lazy models' copies) gives what
``copy.deepcopy`` gives: a fast path for plainly pickled modules, deepcopy itself for the others."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from examples.d2l_blocks import Chimera
from modscope.core.walk import deep_copy, visits


class Configured(nn.Module):
    """Attributes of every kind a module keeps: a tuple, a list, a dict, a set, a plain tensor, a hook."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.sizes, self.names, self.options, self.tags = (3, 3), ["a", "b"], {"k": [1, 2]}, {"x", "y"}
        self.constant = torch.ones(2)
        self.register_buffer("kept", torch.zeros(1), persistent=False)
        self.fc.register_forward_hook(lambda m, a, out: out * 2)

    def forward(self, x):
        return self.fc(x) + self.constant.sum()


class OwnDeepcopy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.copies = 0

    def __deepcopy__(self, memo):
        new = OwnDeepcopy()
        new.copies = self.copies + 1
        memo[id(self)] = new
        return new


def _state(model: nn.Module):
    """Everything but object identity: per module its class, instance-dict keys and non-tensor values."""
    out = []
    for v in visits(model):
        plain = {k: val for k, val in vars(v.module).items()
                 if not k.startswith("_") and not isinstance(val, (torch.Tensor, nn.Module))}
        out.append((v.name, type(v.module), sorted(vars(v.module)), plain))
    return out


def test_the_fast_copy_equals_deepcopy_and_shares_nothing_mutable():
    model = nn.Sequential(Configured(), Chimera())
    model[1].tied = model[0].fc  # a second name for a module
    fast, slow = deep_copy(model), copy.deepcopy(model)
    assert _state(fast) == _state(slow)
    x = torch.randn(2, 3)
    torch.manual_seed(0)
    expected = slow[0](x)
    assert torch.equal(fast[0](x), expected)  # the hook came along: outputs doubled as in the original
    assert fast[1].tied is fast[0].fc and fast[0].fc is not model[0].fc
    assert fast[0].names == model[0].names and fast[0].names is not model[0].names
    assert fast[0].options["k"] is not model[0].options["k"] and fast[0].tags is not model[0].tags
    assert fast[0].constant is not model[0].constant and "kept" in fast[0]._non_persistent_buffers_set
    assert fast[0]._non_persistent_buffers_set is not model[0]._non_persistent_buffers_set
    assert fast[0].fc.weight is not model[0].fc.weight and torch.equal(fast[0].fc.weight, model[0].fc.weight)


def test_a_module_with_its_own_deepcopy_is_copied_by_it():
    model = nn.Sequential(OwnDeepcopy())
    assert deep_copy(model)[0].copies == 1


class OwnSetstate(nn.Module):
    """A ``__setstate__`` of its own that fills in what an old pickle lacks, as ``Conv2d``'s does."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.mode = "new"

    def __setstate__(self, state):
        super().__setstate__(state)
        self.restored = getattr(self, "restored", 0) + 1


def test_a_module_with_its_own_setstate_gets_it_called_as_deepcopy_calls_it():
    model = nn.Sequential(OwnSetstate(), nn.Conv2d(2, 3, 3))
    fast, slow = deep_copy(model), copy.deepcopy(model)
    assert _state(fast) == _state(slow) and fast[0].restored == slow[0].restored == 1
    assert fast[1].weight is not model[1].weight and torch.equal(fast[1].weight, model[1].weight)
