"""``modscope summary ... --input`` through the real command line, error paths included."""
from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

import modscope
from examples.lenet import LeNet
from modscope.errors import ForwardError
from modscope.render.console import summary_view
from tests import forward_models as fm


def test_json_report_of_lenet(cli):
    result = cli("summary", "examples/lenet.py:LeNet", "--input", "1,1,28,28", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        LeNet()(torch.randn(1, 1, 28, 28))
    assert document["flops_total"] == counter.get_total_flops()
    by_name = {m["name"]: m for m in document["modules"]}
    assert by_name["net.0"]["output_shapes"] == {"shape": [1, 6, 28, 28], "dtype": "float32"}
    assert by_name[""]["calls"] == 1 and by_name["net.0"]["flops"] > 0
    assert document["memory"]["training_total"] > document["memory"]["inference_total"] > 0
    assert document["forward"]["uncounted_ops"]["aten.sigmoid"] == 4


def test_table_with_shapes_calls_flops_and_memory(cli):
    result = cli("summary", "examples/d2l_blocks.py:FixedHiddenMLP", "--input", "2,20", "--optimizer", "sgd")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("input", "output", "calls", "FLOPs", "2x20", "Memory estimate (optimizer: sgd)", "Assumptions"):
        assert text in out, text
    linear = next(line for line in out.splitlines() if line.strip().startswith("linear"))
    assert " 2 " in linear, "the reused Linear shows two calls"


def test_meta_device_with_token_inputs_and_a_data_dependent_module(cli):
    result = cli("summary", "bench/decoder.py:decoder_tiny", "--input", "1,16:int64[0,100)", "--device", "meta", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["forward"]["device"] == "meta"
    assert document["modules"][0]["output_shapes"]["shape"] == [1, 16, 100]
    assert all(p["device"] == "meta" for p in document["parameters"]), "built on meta, no weights allocated"
    text = cli("summary", "examples/d2l_blocks.py:Chimera", "--input", "2,20", "--device", "meta").stdout
    assert "fallback: 2 (FixedHiddenMLP)" in text.replace("\n", " ")


def test_failing_forward_exits_2_and_keeps_the_partial_json(cli):
    result = cli("summary", "tests/forward_models.py:Broken", "--input", "2,10", "--json")
    assert result.returncode == 2
    assert "'second' (Linear)" in result.stderr and "2x20" in result.stderr
    assert result.stderr.count("\n") == 1, "one clear error line"
    document = json.loads(result.stdout)
    assert document["forward"]["error"]["module"] == "second"
    assert document["modules"][1]["output_shapes"]["shape"] == [2, 20]
    text = cli("summary", "tests/forward_models.py:Broken", "--input", "2,10")
    assert text.returncode == 2 and "FAILED" in text.stdout and "first" in text.stdout


def test_inputs_factory_and_keyword_inputs(cli):
    result = cli("summary", "tests/forward_models.py:Nested", "--inputs", "tests/forward_models.py:make_nested_inputs", "--json")
    assert result.returncode == 0, result.stderr
    root = json.loads(result.stdout)["modules"][0]
    assert root["input_kwargs"] == {
        "x": {"shape": [2, 8], "dtype": "float32"}, "mask": {"shape": [2, 16], "dtype": "float32"}, "scale": 0.5,
    }
    result = cli("summary", "tests/forward_models.py:Nested", "--input", "3,8", "--kwarg", "mask=3,16", "--no-flops", "--no-memory", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["flops_total"] is None and document["memory"] is None
    assert document["modules"][0]["input_kwargs"]["mask"]["shape"] == [3, 16]


def test_usage_errors(cli):
    checks = [
        (("--train-mode",), "needs a forward pass"),
        (("--input", "1,4", "--device", "tpu"), "not a device"),
    ]
    if not torch.cuda.is_available():
        checks.append((("--input", "1,4", "--device", "cuda"), "no CUDA device"))
    for args, expected in checks:
        result = cli("summary", "tests/forward_models.py:Reused", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)


def render(report, width: int = 110) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(summary_view(report, depth=3))
    return console.file.getvalue()


def test_rendering_collapses_identical_blocks_and_marks_the_failure():
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)], torch.nn.Linear(4, 2))
    text = render(modscope.summary(model, inputs=torch.randn(1, 4)))
    row = next(line for line in text.splitlines() if "0-2" in line)
    assert "Linear x3" in row and "32 each" in row and "1x4" in row
    with pytest.raises(ForwardError) as caught:
        modscope.summary(fm.Broken(), inputs=torch.randn(2, 10))
    text = render(caught.value.partial)
    assert "FAILED in second (Linear) called with (2x20)" in text.replace("\n", " ")
    second = next(line for line in text.splitlines() if line.strip().startswith("second"))
    assert "FAILED" in second


def test_rendering_lists_uncounted_ops_and_never_called_modules():
    text = render(modscope.summary(fm.WithUnused(), inputs=torch.randn(2, 4)))
    assert "never called in this pass: aux" in text
    assert "no gradient: aux.0.weight, aux.0.bias" in text
    text = render(modscope.summary(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), inputs=torch.randn(1, 2)))
    assert "counted as 0 (no formula): aten.relu x1" in text
