"""A 2,000-deep chain and long autograd graphs through every forward analysis: no RecursionError, no segfault."""
from __future__ import annotations

import json
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.checkpoint.weights import load_state_dict, load_weights
from modscope.errors import ForwardError
from tests.conftest import run_modscope
from tests.deep_wide_models import DEPTH, deep

X = torch.randn(1, 2)


@pytest.fixture(scope="module")
def chain() -> nn.Module:
    return deep(DEPTH)


def _state(model) -> dict:
    """``model.state_dict()`` without torch's recursion."""
    from modscope.core.walk import join, visits

    return {join(v.name, k): t.detach() for v in visits(model) if v.first for k, t in v.module._parameters.items()}


def _flags(model):
    from modscope.core.walk import modules

    return [m.training for m in modules(model)]


def test_deep_chain_runs_every_forward_analysis(chain):
    before, limit = _flags(chain), sys.getrecursionlimit()
    report = modscope.summary(chain, inputs=X)
    assert len(report.forward.modules) == 2 * DEPTH and all(m.calls == 1 for m in report.forward.modules)
    assert report.forward.flops_total == DEPTH * 2 * 2 * 2  # one (1x2)@(2x2) matmul per level
    assert report.forward.unused_parameters == ()
    meta = modscope.summary(chain, inputs=X, device="meta", memory=False)
    assert meta.forward.flops_total == report.forward.flops_total
    grads = modscope.grads(chain, X)
    assert len(grads.params) == 2 * DEPTH
    assert modscope.find_nonfinite(chain, X).ok
    graph = modscope.graph(chain, X)
    assert len([n for n in graph.nodes if n.kind.value == "module"]) == DEPTH
    timing = modscope.time_layers(chain, X, warmup=0, repeat=1)
    assert len(timing.layers) == 2 * DEPTH
    assert _flags(chain) == before and sys.getrecursionlimit() == limit


def test_deeper_than_the_stack_holds_is_a_clean_forward_error():
    with pytest.raises(ForwardError, match="RecursionError.*levels deep; modscope allowed"):
        modscope.grads(deep(6_000), X)


def test_deep_weights_load_without_recursion(chain, tmp_path):
    source = deep(DEPTH)
    path = tmp_path / "deep.pt"
    torch.save(_state(source), path)
    target = deep(DEPTH)
    load_weights(target, str(path))
    assert torch.equal(target.child.child.linear.weight, source.child.child.linear.weight)


class _Renaming(nn.Module):
    """A container whose pre-hook renames its children's keys (the whole subtree must reach it)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        self._register_load_state_dict_pre_hook(self._rename)

    def _rename(self, state, prefix, *rest):
        for key in [k for k in state if k.startswith(prefix + "old.")]:
            state[prefix + "inner." + key[len(prefix + "old."):]] = state.pop(key)


def _awkward():
    torch.manual_seed(0)
    shared = nn.Linear(2, 2)
    return nn.Sequential(nn.Linear(2, 2), nn.Sequential(_Renaming(), _Renaming()), shared, nn.Sequential(shared))


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_matches_torch(strict):
    state = OrderedDict((k.replace("1.1.inner.", "1.1.old."), v) for k, v in _awkward().state_dict().items())
    state["1.0.inner.7.x"] = torch.zeros(1)  # unexpected, two levels down
    state["zzz"] = torch.zeros(1)
    del state["0.bias"]  # missing
    ours, theirs = _awkward(), _awkward()
    outcomes = []
    for model, load in ((ours, load_state_dict), (theirs, nn.Module.load_state_dict)):
        try:
            outcomes.append(str(load(model, state, strict=strict)))
        except RuntimeError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1] and "zzz" in outcomes[0]
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), name


class LongGraph(nn.Module):
    """One module whose forward builds a 50,000-node autograd chain (cheap to build, long to free)."""

    def __init__(self, steps: int = 50_000):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.unused = nn.Parameter(torch.ones(2))
        self.steps = steps

    def forward(self, x):
        for _ in range(self.steps):
            x = x * self.scale
        return x


def test_long_autograd_graphs_are_freed_without_a_segfault():
    model = LongGraph()
    report = modscope.summary(model, inputs=X, flops=False)  # the unused-parameter walk looks at every node
    assert report.forward.unused_parameters == ("unused",)
    assert modscope.find_nonfinite(model, X).ok


def test_wide_sequential_in_every_forward_command_of_the_cli():
    """The real CLI on a 5,000-layer Sequential (50,000 in docs/forward.md: the same code, more seconds)."""
    target, args = "tests/deep_wide_models.py:wide", ("--arg", "width=5000", "--input", "1,2")
    for command in (("summary", "--json"), ("nan",), ("graph", "-o", "/dev/null")):
        result = run_modscope(command[0], target, *args, *command[1:], timeout=240)
        assert result.returncode == 0, (command, result.returncode, result.stderr[-500:])


def test_deep_chain_in_the_cli(tmp_path):
    path = tmp_path / "deep.pt"
    torch.save(_state(deep(DEPTH)), path)
    result = run_modscope("summary", "tests/deep_wide_models.py:deep", "--input", "1,2", "--weights", str(path),
                          "--json", timeout=240)
    assert result.returncode == 0, result.stderr[-500:]
    assert json.loads(result.stdout)["flops_total"] == DEPTH * 8
