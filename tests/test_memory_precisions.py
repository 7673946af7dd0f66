"""The memory estimate by precision: the float32 row is the estimate itself, and a row predicted from a float32
model equals what the same model measures when it is really cast to that dtype."""
from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn as nn
from rich.console import Console

import modscope
from examples.catalog import EXAMPLES
from modscope.render.forward import precision_view
from tests.conftest import run_modscope


def _example(name):
    return next(e for e in EXAMPLES if e.name == name).build()


class Masked(nn.Module):
    """Linear layers with an integer buffer and an int64 input path (kept as measured in every row)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)
        self.register_buffer("steps", torch.zeros(3, dtype=torch.int64))
        self.register_buffer("scale", torch.ones(16))

    def forward(self, ids):
        return self.head(torch.relu(self.proj(self.embed(ids) * self.scale)))


CASES = [
    ("lenet", lambda: _example("lenet"), lambda dtype: torch.randn(2, 1, 28, 28, dtype=dtype)),
    ("masked", Masked, lambda dtype: torch.randint(0, 50, (2, 7))),
]


@pytest.mark.parametrize("name,build,make_input", CASES, ids=[c[0] for c in CASES])
def test_float32_row_is_the_estimate_itself(name, build, make_input):
    memory = modscope.summary(build(), inputs=make_input(torch.float32)).forward.memory
    row = next(r for r in memory.precisions if r.precision == "float32")
    assert row.weights == memory.params + memory.buffers
    assert row.inference == memory.inference_total
    assert row.training["adam"] == memory.training_total


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name,build,make_input", CASES, ids=[c[0] for c in CASES])
def test_a_predicted_row_equals_the_model_really_cast(name, build, make_input, dtype):
    model = build()
    predicted = modscope.summary(model, inputs=make_input(torch.float32)).forward.memory
    cast = copy.deepcopy(model).to(dtype)  # .to() casts floating parameters and buffers, not the int64 ones
    measured = modscope.summary(cast, inputs=make_input(dtype)).forward.memory
    row = next(r for r in predicted.precisions if r.precision == str(dtype).removeprefix("torch."))
    # exact: these models save only tensors in the compute dtype (or integer ones), so bytes scale exactly
    assert row.weights == measured.params + measured.buffers
    assert row.inference == measured.inference_total
    assert row.training["adam"] == measured.training_total


def test_int8_weights_are_one_byte_each_for_inference_only():
    model = Masked()
    memory = modscope.summary(model, inputs=torch.randint(0, 50, (2, 7))).forward.memory
    row = next(r for r in memory.precisions if r.precision == "int8")
    params = sum(p.numel() for p in model.parameters())
    assert row.weights == params * 1 + 16 * 2 + 3 * 8  # float16 scale buffer, int64 steps as they are
    assert row.compute_dtype == "float16"
    assert set(row.training.values()) == {None}


def test_no_training_figures_when_the_saving_pass_was_not_measured():
    model = _example("lenet")
    report = modscope.summary(model, inputs=torch.randn(1, 1, 28, 28), train_mode=False)
    memory = report.forward.memory
    if memory.activations is None:
        assert all(v is None for r in memory.precisions for v in r.training.values())
    else:
        assert memory.precisions[0].training["adam"] == memory.training_total


def test_table_fits_80_columns_without_cutting_a_number():
    memory = modscope.summary(_example("lenet"), inputs=torch.randn(2, 1, 28, 28)).forward.memory
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(precision_view(memory))
    text = console.file.getvalue()
    assert "…" not in text
    assert "bfloat16" in text and "AdamW" in text


def test_cli_json_carries_the_rows():
    out = run_modscope("summary", "examples/lenet.py:LeNet", "--input", "2,1,28,28", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["memory"]["precisions"]
    assert [r["precision"] for r in rows] == ["float32", "bfloat16", "float16", "int8"]
    assert rows[1]["training"]["adam"] < rows[0]["training"]["adam"]
    assert rows[3]["training"] == {"sgd": None, "adam": None, "adamw": None}
