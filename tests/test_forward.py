"""Forward-pass analysis through the Python API: shapes, calls, FLOPs, failures, modes, memory, contract."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import modscope
from modscope.errors import ForwardError, UsageError
from modscope.load.inputs import ModelInputs
from modscope.render.json import dumps
from modscope.reports.forward import Record, TensorMeta
from tests import forward_models as fm
from tests.contract import assert_unchanged, snapshot


def flops_of(model, *args, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args, **kwargs)
    return counter.get_total_flops()


def test_shapes_calls_and_flops_of_a_small_mlp():
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    x = torch.randn(2, 20)
    before = snapshot(model)
    report = modscope.summary(model, inputs=x)
    assert_unchanged(model, before)
    forward = report.forward
    assert forward.flops_total == flops_of(model, x) == 2 * 2 * (20 * 64 + 64 * 10)
    first = forward.module("0")
    assert first.calls == 1
    assert first.first.args == (TensorMeta((2, 20), "float32"),)
    assert first.first.output == TensorMeta((2, 64), "float32")
    assert first.flops == first.self_flops == 2 * 2 * 20 * 64
    root = forward.module("")
    assert root.flops == forward.flops_total and root.self_flops == 0
    assert forward.module("1").flops == 0
    assert "aten.relu" in forward.uncounted_ops
    assert not any(op in forward.uncounted_ops for op in ("aten.t", "aten.view")), "views do no arithmetic"
    assert forward.module("0").output_bytes == 2 * 64 * 4


def test_to_dict_adds_forward_keys():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    document = json.loads(dumps(modscope.summary(model, inputs=torch.randn(5, 4))))
    root, first = document["modules"][0], document["modules"][1]
    assert root["calls"] == 1 and root["input_shapes"] == [{"shape": [5, 4], "dtype": "float32"}]
    assert first["output_shapes"] == {"shape": [5, 3], "dtype": "float32"}
    assert first["flops"] == 2 * 5 * 4 * 3 and first["call_variants"] == []
    assert document["flops_total"] == 2 * 5 * (4 * 3 + 3 * 2)
    assert set(document["memory"]) >= {
        "params", "buffers", "gradients", "optimizer", "activations", "inference_total", "training_total",
    }
    assert document["forward"]["error"] is None and document["forward"]["device"] == "cpu"
    assert "flops_total" not in modscope.summary(model).to_dict(), "static summaries keep their keys"


def test_multi_input_keyword_and_non_tensor_values():
    model = fm.Nested()
    inputs = ModelInputs((torch.randn(2, 8),), {"mask": torch.ones(2, 16), "scale": 0.5, "mode": "eval"})
    report = modscope.summary(model, inputs=inputs)
    root = report.forward.module("")
    assert root.first.kwargs == {"mask": TensorMeta((2, 16), "float32"), "scale": 0.5, "mode": "eval"}
    out = root.first.output
    assert isinstance(out, Record) and out.type == "Output"
    assert out.fields["logits"] == TensorMeta((2, 3), "float32")
    assert out.fields["note"] == "ok" and out.fields["features"]["mode"] == "eval"
    pair = out.fields["features"]["pair"]
    assert pair == Record("Pair", {"left": TensorMeta((2, 16), "float32"), "right": TensorMeta((2, 16), "float32")})
    document = report.to_dict()
    root_json = document["modules"][0]
    assert root_json["input_kwargs"]["scale"] == 0.5
    assert root_json["output_shapes"]["type"] == "Output"
    assert root_json["output_shapes"]["fields"]["features"]["pair"]["fields"]["left"]["shape"] == [2, 16]
    json.dumps(document)


def test_dict_and_tuple_inputs_are_keyword_and_positional():
    model = fm.Nested()
    by_dict = modscope.summary(model, inputs={"x": torch.randn(3, 8)}).forward.module("")
    assert by_dict.first.args == () and by_dict.first.kwargs == {"x": TensorMeta((3, 8), "float32")}
    by_tuple = modscope.summary(model, inputs=(torch.randn(3, 8), torch.ones(3, 16))).forward.module("")
    assert len(by_tuple.first.args) == 2


def test_reused_module_counts_calls_and_keeps_distinct_shapes():
    model = fm.Reused()
    report = modscope.summary(model, inputs=torch.randn(2, 4)).forward
    shared = report.module("shared")
    assert shared.calls == 3
    assert shared.first.args == (TensorMeta((2, 4), "float32"),) and shared.first.count == 2
    assert [v.args for v in shared.variants] == [(TensorMeta((4, 4), "float32"),)]
    assert shared.flops == report.flops_total == 2 * (2 + 2 + 4) * 4 * 4
    assert report.to_dict()["never_called"] == []


def test_failing_forward_names_the_module_and_keeps_the_partial_report():
    model = fm.Broken()
    before = snapshot(model)
    with pytest.raises(ForwardError) as caught:
        modscope.summary(model, inputs=torch.randn(2, 10))
    assert_unchanged(model, before)
    message = str(caught.value)
    assert "'second' (Linear)" in message and "2x20" in message and "RuntimeError" in message
    partial = caught.value.partial
    assert isinstance(partial, modscope.SummaryReport)
    forward = partial.forward
    assert forward.failure.module == "second" and forward.failure.type == "Linear"
    assert forward.failure.call.args == (TensorMeta((2, 20), "float32"),)
    assert forward.module("first").first.output == TensorMeta((2, 20), "float32")
    assert forward.module("second").calls == 1 and forward.module("second").first is None
    document = json.loads(dumps(partial))
    assert document["forward"]["error"]["module"] == "second"
    assert document["forward"]["error"]["input_shapes"] == [{"shape": [2, 20], "dtype": "float32"}]
    assert document["modules"][1]["output_shapes"] == {"shape": [2, 20], "dtype": "float32"}
    assert document["memory"] is None


def test_an_error_caught_inside_the_model_is_not_blamed():
    with pytest.raises(ForwardError) as caught:
        modscope.summary(fm.Catches(), inputs=torch.randn(2, 10))
    assert caught.value.partial.forward.failure.module == ""
    assert "root gave up" in str(caught.value)
    report = modscope.summary(fm.Catches(fail=False), inputs=torch.randn(2, 10))
    assert report.forward.failure is None and report.forward.module("risky.second").calls == 1


def test_no_grad_and_eval_by_default_train_mode_on_request():
    model = fm.GradProbe()
    model.train()
    modscope.summary(model, inputs=torch.randn(1, 3), memory=False)
    assert model.seen == [(False, False)]
    model.seen.clear()
    report = modscope.summary(model, inputs=torch.randn(1, 3), train_mode=True)
    assert model.seen == [(True, True)], "train mode measures saved tensors in the same pass"
    assert report.forward.train_mode and report.forward.grad_enabled
    assert model.training and model.linear.weight.grad is None


def test_training_mode_leaves_buffers_rng_and_grads_as_they_were():
    model = fm.BatchNormNet()
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    model.eval()
    before = snapshot(model)
    x = torch.randn(2, 3, 8, 8)
    rng = torch.get_rng_state()
    modscope.summary(model, inputs=x, train_mode=True)
    modscope.summary(model, inputs=x)  # the memory pass runs in training mode too
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng)


def test_never_called_modules_and_parameters_without_gradient():
    model = fm.WithUnused()
    forward = modscope.summary(model, inputs=torch.randn(2, 4)).forward
    assert forward.never_called == ("aux",), "top-most only; ModuleList has no forward of its own"
    assert forward.module("aux.0").calls == 0 and forward.module("blocks").calls == 0
    assert forward.unused_parameters == ("aux.0.weight", "aux.0.bias"), "frozen layers are not listed"
    dense = modscope.summary(_example("param_dict_dense"), inputs=torch.randn(1, 4)).forward
    assert dense.never_called == ()
    assert dense.unused_parameters == ("params.linear2", "params.linear3")


def test_memory_estimate_counts_each_category():
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    model[2].requires_grad_(False)
    x = torch.randn(4, 10)
    memory = modscope.summary(model, inputs=x).forward.memory
    params = (10 * 6 + 6 + 6 * 2 + 2) * 4
    trainable = (10 * 6 + 6) * 4
    assert memory.params == params and memory.buffers == 0
    assert memory.gradients == trainable
    assert memory.optimizer == 2 * trainable + 2 * 4, "Adam: two moments plus a float32 step per tensor"
    # saved for backward: the input (for the weight gradient) and the ReLU output (for ReLU and the frozen
    # Linear's input gradient), each once; parameters are not activations
    assert memory.activations == 4 * 10 * 4 + 4 * 6 * 4
    assert memory.training_total == params + trainable + memory.optimizer + memory.activations
    assert memory.inference_total == params + memory.inference_activations
    assert memory.by_dtype["optimizer"] == {"float32": memory.optimizer}
    sgd = modscope.summary(model, inputs=x, optimizer="sgd").forward.memory
    assert sgd.optimizer == trainable and sgd.optimizer_name == "sgd"
    assert any("saved-tensor hooks" in a for a in memory.assumptions)


def test_memory_by_dtype_for_a_bfloat16_model():
    model = nn.Linear(8, 8).to(torch.bfloat16)
    memory = modscope.summary(model, inputs=torch.randn(2, 8, dtype=torch.bfloat16)).forward.memory
    assert memory.by_dtype["params"] == {"bfloat16": (64 + 8) * 2}
    assert memory.by_dtype["optimizer"] == {"bfloat16": 2 * (64 + 8) * 2, "float32": 2 * 4}
    assert memory.by_dtype["activations"] == {"bfloat16": 2 * 8 * 2}


def test_memory_falls_back_to_eval_mode_when_training_mode_fails():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))  # batch of one: BatchNorm1d cannot train
    memory = modscope.summary(model, inputs=torch.randn(1, 4)).forward.memory
    assert memory.activations is not None
    assert any("eval mode" in a for a in memory.assumptions)


class _Branchy(nn.Module):
    """torch.cond: FlopCounterMode counts each branch apart and keeps the larger one."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 32))

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x @ self.w @ self.w, lambda x: x @ self.w, (x,))


def test_flops_of_torch_cond_follow_flop_counter_mode():
    model, x = _Branchy(), torch.randn(8, 32)
    expected = flops_of(model, x)
    assert expected == 2 * (2 * 8 * 32 * 32)  # the larger branch only
    report = modscope.summary(model, inputs=x, memory=False)
    assert report.forward.flops_total == expected


def test_no_flops_and_no_memory():
    model = nn.Linear(3, 3)
    forward = modscope.summary(model, inputs=torch.randn(1, 3), flops=False, memory=False).forward
    assert forward.flops_total is None and forward.module("").flops is None
    assert forward.uncounted_ops is None and forward.memory is None
    assert modscope.summary(model, inputs=torch.randn(1, 3), flops=False).to_dict()["flops_total"] is None


def test_lazy_modules_run_on_a_copy():
    model = nn.Sequential(nn.LazyLinear(5), nn.ReLU())
    report = modscope.summary(model, inputs=torch.randn(2, 7))
    assert report.forward.module("0").first.output == TensorMeta((2, 5), "float32")
    assert any("lazy" in note for note in report.forward.notes)
    assert isinstance(model[0], nn.LazyLinear), "the caller's model stays uninitialized"


def test_bad_arguments():
    with pytest.raises(UsageError, match="optimizer"):
        modscope.summary(nn.Linear(1, 1), inputs=torch.randn(1, 1), optimizer="lion")
    with pytest.raises(UsageError, match="not a device|only cpu"):
        modscope.summary(nn.Linear(1, 1), inputs=torch.randn(1, 1), device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when CUDA is absent")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(UsageError, match="no CUDA device"):
        modscope.summary(nn.Linear(1, 1), inputs=torch.randn(1, 1), device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pass_moves_the_model_back():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    before = snapshot(model)
    x = torch.randn(4, 8)
    report = modscope.summary(model, inputs=x, device="cuda")
    assert_unchanged(model, before)
    assert report.forward.device.startswith("cuda")
    assert report.forward.flops_total == flops_of(model, x)
    assert report.forward.module("1").first.output == TensorMeta((4, 8), "float32")


def _example(name: str):
    from examples import catalog

    return catalog.get(name).build()


def test_describe_cuts_big_and_deep_structures_short():
    from modscope.collect.forward.structure import MAX_DEPTH, MAX_ITEMS, describe
    from modscope.reports.forward import Opaque

    many = describe([torch.zeros(1)] * (MAX_ITEMS + 5))
    assert len(many) == MAX_ITEMS + 1 and many[-1] == Opaque("…", "5 more")
    deep = describe([[[[[[[[torch.zeros(2)]]]]]]]])
    node = deep
    for _ in range(MAX_DEPTH):
        node = node[0]
    assert isinstance(node, Opaque)
    assert describe(torch.float16) == Opaque("dtype", "torch.float16")
    assert describe(object()) == Opaque("object")
    assert describe("x" * 100) == Opaque("str", "'" + "x" * 38 + "…")


def test_torchscript_model_gets_whole_model_results():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    forward = modscope.summary(scripted, inputs=torch.randn(4, 2)).forward
    assert forward.modules == () and any("TorchScript" in n for n in forward.notes)
    assert forward.inputs.output == TensorMeta((4, 3), "float32")
    assert forward.flops_total == 2 * 4 * 2 * 3
    assert forward.memory.inference_activations == (4 * 2 + 4 * 3) * 4
    assert "calls" not in modscope.summary(scripted, inputs=torch.randn(4, 2)).to_dict()["modules"][0]
