"""preserved_state puts back what an analysis disturbs, including a move or cast of the whole model."""
from __future__ import annotations

import torch
import torch.nn as nn

from modscope.hooks import preserved_state
from tests.contract import assert_unchanged, snapshot


def _model_with_grads_and_a_shared_buffer() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    model[2].register_buffer("scale", model[1].running_var)  # one buffer object under two modules
    model[0].weight.grad = torch.ones(3, 3)
    return model


def test_a_cast_inside_comes_back_with_the_same_objects_grads_and_ties():
    # A cast, like a move to another device, puts new buffer objects into the modules and casts .grad too:
    # the CPU stand-in for what `--device cuda` does to a CPU model.
    model = _model_with_grads_and_a_shared_buffer()
    before = snapshot(model)
    with preserved_state(model):
        for p in model.parameters():
            p.grad = None  # as modscope does before a move: its own backward then makes grads of the new dtype
        model.double()
        model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()  # train mode: running stats move
        assert model[1].running_mean.dtype == torch.float64 and model[0].weight.grad.dtype == torch.float64
    assert_unchanged(model, before)
    assert model[2].scale is model[1].running_var


def test_buffers_added_or_removed_inside_are_undone():
    model = _model_with_grads_and_a_shared_buffer()
    before = snapshot(model)
    with preserved_state(model):
        model[0].register_buffer("extra", torch.zeros(1))
        del model[1]._buffers["num_batches_tracked"]
    assert_unchanged(model, before)
    assert "extra" not in model[0]._buffers and "num_batches_tracked" in model[1]._buffers
