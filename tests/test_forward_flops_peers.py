"""Cases from peer suites (fvcore, FlopCounterMode): re-entrant modules and CPU recurrent kernels."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

import modscope
from modscope.reports.forward import TensorMeta
from tests.contract import assert_unchanged, snapshot


def flop_counter_mode_total(model: nn.Module, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args)
    return counter.get_total_flops()


class CallsItself(nn.Module):
    """fvcore's test_recursive_scope: forward calls the module itself on one row fewer, ``depth`` times."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x, depth: int = 3):
        y = self.linear(x)
        return y if depth == 0 else self(y[1:], depth - 1)


class HoldsARecursion(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = CallsItself()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.inner(x))


def test_a_module_calling_itself_counts_its_flops_once():
    model, x = HoldsARecursion().eval(), torch.randn(5, 8)
    expected = flop_counter_mode_total(model, x)
    state = snapshot(model)
    forward = modscope.summary(model, inputs=x).forward
    assert_unchanged(model, state)
    assert forward.flops_total == expected
    assert forward.module("").flops == expected
    inner = forward.module("inner")
    assert inner.calls == 4
    assert inner.flops == flop_counter_mode_total(model.inner, x)  # once, not once per nesting level
    assert inner.self_flops == 0 and forward.module("inner.linear").flops == inner.flops
    assert inner.flops + forward.module("head").flops == expected


def test_first_call_shapes_of_a_module_calling_itself_are_the_outermost_call():
    forward = modscope.summary(HoldsARecursion().eval(), inputs=torch.randn(5, 8)).forward
    inner = forward.module("inner")
    assert inner.first.args == (TensorMeta((5, 8), "float32"),) and inner.first.count == 1
    assert inner.first.output == TensorMeta((2, 8), "float32")
    variants = [(v.args, v.output, v.count) for v in inner.variants]
    expected = [((TensorMeta((rows, 8), "float32"), rows - 2), TensorMeta((2, 8), "float32"), 1) for rows in (4, 3, 2)]
    assert variants == expected
    assert [v.args[0].shape for v in forward.module("inner.linear").variants] == [(4, 8), (3, 8), (2, 8)]


RECURRENT = [
    (nn.LSTM, {}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (nn.LSTM, {"num_layers": 3, "bias": False}),
    (nn.LSTM, {"proj_size": 8}),
    (nn.GRU, {}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
]


@pytest.mark.parametrize("cls, options", RECURRENT, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_recurrent_flops_agree_on_cpu_and_meta(cls, options):
    torch.manual_seed(0)
    model, x = cls(16, 32, **options).eval(), torch.randn(5, 7, 16)
    on_meta = flop_counter_mode_total(copy.deepcopy(model).to("meta"), x.to("meta"))  # decomposed: mm formulas
    cpu = modscope.summary(model, inputs=x).forward
    meta = modscope.summary(model, inputs=x, device="meta").forward
    assert cpu.flops_total == meta.flops_total == on_meta > 0
    assert cpu.module("").flops == on_meta
    assert not cpu.flops_missed_ops and "aten.mkldnn_rnn_layer" not in cpu.uncounted_ops


def test_recurrent_flops_in_train_mode_agree_on_cpu_and_meta():
    model, x = nn.LSTM(16, 32, num_layers=2).train(), torch.randn(5, 7, 16)
    cpu = modscope.summary(model, inputs=x, train_mode=True).forward
    meta = modscope.summary(model, inputs=x, device="meta", train_mode=True).forward
    assert cpu.flops_total == meta.flops_total > 0


def test_an_uncounted_multiply_add_op_makes_the_table_say_lower_bound():
    from modscope.api.forward import analyse_forward

    class Int8Matmul(nn.Module):  # torch's int8 matmul kernel has no FLOP formula
        def forward(self, a, b):
            return torch._int_mm(a, b)

    args = (torch.ones(32, 32, dtype=torch.int8), torch.ones(32, 32, dtype=torch.int8))
    forward = analyse_forward(Int8Matmul(), args, parameters=(), buffers=(), memory=False)
    assert forward.flops_missed_ops == ("aten._int_mm",)
    assert forward.to_dict()["flops_lower_bound"] is True
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(modscope.summary(Int8Matmul(), inputs=args))
    assert "a lower bound: aten._int_mm did multiply-adds" in console.file.getvalue()
    plain = modscope.summary(nn.Linear(4, 4), inputs=torch.randn(2, 4))
    assert not plain.forward.flops_missed_ops and plain.forward.to_dict()["flops_lower_bound"] is False
