"""Structured inputs reach the model exactly as given: namedtuples, PackedSequence, OrderedDict and dataclasses
keep their types through every command path (summary on cpu and meta, grads, find_nonfinite, time_layers,
graph) and through device moves."""
from __future__ import annotations

import collections
import dataclasses
import textwrap

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import modscope
from modscope.core.nest import map_tensors
from modscope.load.inputs import as_model_inputs
from tests.contract import assert_unchanged, snapshot

Point = collections.namedtuple("Point", ["x", "y"])


class NamedTupleNet(nn.Module):
    """torchinfo's test_namedtuple: the argument is read by field name."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, point):
        assert type(point) is Point, type(point)
        return self.lin(point.x) + point.y


class PackedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)

    def forward(self, packed):
        assert isinstance(packed, PackedSequence), type(packed)
        _, (h, _) = self.lstm(packed)
        return h[-1]


class OrderedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, named):
        assert type(named) is collections.OrderedDict and list(named) == ["b", "a"], (type(named), list(named))
        return self.lin(named["a"]) * named["b"]


@dataclasses.dataclass(frozen=True)
class Batch:
    image: torch.Tensor
    scale: float = 2.0


class DataclassNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, batch):
        assert type(batch) is Batch, type(batch)
        return self.lin(batch.image) * batch.scale


def _packed():
    lengths = torch.tensor([6, 4, 2])
    return pack_padded_sequence(torch.randn(3, 6, 4), lengths, batch_first=True, enforce_sorted=False)


CASES = {
    "namedtuple": (NamedTupleNet, lambda: Point(torch.randn(2, 3), torch.randn(2, 3))),
    "packed": (PackedLSTM, _packed),
    "ordered": (OrderedNet, lambda: collections.OrderedDict(b=torch.randn(2, 3), a=torch.randn(2, 3))),
    "dataclass": (DataclassNet, lambda: Batch(torch.randn(2, 3))),
}

PATHS = {
    "summary_cpu": lambda m, x: modscope.summary(m, inputs=x, device="cpu").forward,
    "summary_meta": lambda m, x: modscope.summary(m, inputs=x, device="meta").forward,
    "grads": lambda m, x: modscope.grads(m, x),
    "find_nonfinite": lambda m, x: modscope.find_nonfinite(m, x),
    "time_layers": lambda m, x: modscope.time_layers(m, x, warmup=0, repeat=1),
    "graph": lambda m, x: modscope.graph(m, inputs=x),
}


#: (case, passed alone or as the one element of the positional tuple); a dict alone means keyword arguments
PLACEMENTS = [(case, wrapped) for case in CASES for wrapped in (False, True) if wrapped or case != "ordered"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("case", "wrapped"), PLACEMENTS, ids=[f"{c}-{'tuple' if w else 'alone'}" for c, w in PLACEMENTS])
def test_structured_input_reaches_the_model_on_every_path(case, path, wrapped):
    make_model, make_input = CASES[case]
    model = make_model()
    value = make_input()
    inputs = (value,) if wrapped else value
    before = snapshot(model)
    report = PATHS[path](model, inputs)  # the model asserts the type it receives: a failure raises ForwardError
    assert report is not None
    assert_unchanged(model, before)


def test_summary_describes_the_packed_sequence_as_one_argument():
    forward = modscope.summary(PackedLSTM(), inputs=_packed()).forward
    (arg,) = forward.inputs.args
    assert arg.type == "PackedSequence" and set(arg.fields) >= {"data", "batch_sizes"}
    assert forward.module("lstm").calls == 1


def test_plain_tuples_and_lists_are_still_positional_arguments():
    x, y = torch.randn(2), torch.randn(3)
    assert as_model_inputs((x, y)).args == (x, y)
    assert as_model_inputs([x, y]).args == (x, y)
    point = Point(x, y)
    assert as_model_inputs(point).args == (point,) and as_model_inputs(point).args[0] is point
    packed = _packed()
    assert as_model_inputs(packed).args[0] is packed
    assert as_model_inputs({"x": x}).kwargs == {"x": x}


def test_moves_keep_every_container_type():
    packed = _packed()
    ordered = collections.OrderedDict(b=torch.randn(1), a=torch.randn(1))
    factory = collections.defaultdict(list, a=torch.randn(1))
    value = (Point(torch.randn(1), [torch.randn(1)]), packed, ordered, factory, Batch(torch.randn(1)))
    moved = as_model_inputs((value,)).to("meta").args[0]
    point, packed_meta, ordered_meta, factory_meta, batch = moved
    assert type(point) is Point and point.x.is_meta and type(point.y) is list and point.y[0].is_meta
    assert type(packed_meta) is PackedSequence and packed_meta.data.is_meta
    assert packed_meta.batch_sizes.device.type == "cpu", "nn.LSTM needs batch_sizes on the CPU"
    assert torch.equal(packed_meta.batch_sizes, packed.batch_sizes)
    assert type(ordered_meta) is collections.OrderedDict and list(ordered_meta) == ["b", "a"]
    assert type(factory_meta) is collections.defaultdict and factory_meta.default_factory is list
    assert type(batch) is Batch and batch.image.is_meta and batch.scale == 2.0


def test_unchanged_containers_are_passed_through_as_they_are():
    value = (Point(torch.randn(1), 3), {"k": [torch.randn(1)]})
    assert map_tensors(value, lambda t: t) is value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_sequence_moved_to_cuda_and_back():
    model = PackedLSTM()
    before = snapshot(model)
    forward = modscope.summary(model, inputs=_packed(), device="cuda").forward
    assert forward.device.startswith("cuda") and forward.module("lstm").calls == 1
    assert modscope.time_layers(model, _packed(), device="cuda", warmup=0, repeat=1)
    assert_unchanged(model, before)


def test_cli_inputs_factory_returning_a_namedtuple(cli, tmp_path):
    path = tmp_path / "nt.py"
    path.write_text(textwrap.dedent("""
        import collections, torch, torch.nn as nn
        Point = collections.namedtuple("Point", ["x", "y"])

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(3, 3)

            def forward(self, point):
                return self.lin(point.x) + point.y

        def make_inputs():
            return Point(torch.randn(2, 3), torch.randn(2, 3))
    """))
    result = cli("summary", f"{path}:Net", "--inputs", f"{path}:make_inputs", "--no-memory")
    assert result.returncode == 0, result.stderr
    assert "Point" in result.stdout
