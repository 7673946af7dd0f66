"""modscope.graph: structure of hierarchy and dataflow graphs, and the no-side-effect contract."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import modscope  # noqa: E402
from examples import catalog  # noqa: E402
from modscope.errors import ForwardError, UsageError  # noqa: E402
from modscope.load.inputs import parse_tensor_spec  # noqa: E402
from modscope.reports.graph import EdgeKind, GraphMode, NodeKind  # noqa: E402


def example(name: str):
    entry = catalog.get(name)
    if "needs_torchvision" in entry.notes:
        pytest.importorskip("torchvision")
    generator = torch.Generator().manual_seed(0)
    args = tuple(parse_tensor_spec(spec).make(generator=generator) for spec in entry.inputs)
    return entry.build(), args


def ids(graph, kind=None) -> list[str]:
    return [n.id for n in graph.nodes if kind is None or n.kind is kind]


def edges(graph) -> set[tuple[str, str, str]]:
    return {(e.src, e.dst, e.label) for e in graph.edges if e.kind is EdgeKind.DATA}


# --- hierarchy ------------------------------------------------------------------------------------------


def test_hierarchy_nests_containers_as_clusters():
    model, _ = example("chimera")
    g = modscope.graph(model)
    assert g.mode is GraphMode.HIERARCHY and g.edges == ()
    assert [c.id for c in g.clusters] == ["0", "0.net", "2"]
    assert {c.id: c.parent for c in g.clusters} == {"0": "", "0.net": "0", "2": ""}
    assert ids(g) == ["0.net.0", "0.net.1", "0.net.2", "0.net.3", "0.linear", "1", "2.linear"]
    first = g.node("0.net.0")
    assert (first.cluster, first.type, first.detail, first.params) == ("0.net", "Linear", "20->64", 20 * 64 + 64)


def test_hierarchy_collapses_identical_blocks_and_respects_depth():
    model, _ = example("tiny_gpt")
    g = modscope.graph(model)
    run = [c for c in g.clusters if c.repeat > 1]
    assert [(c.id, c.label, c.repeat, c.type) for c in run] == [("blocks.0", "blocks.0-31", 32, "Block")]
    assert not any(n.id.startswith("blocks.1.") for n in g.nodes)
    assert len(modscope.graph(model, collapse=False).clusters) > 32

    shallow = modscope.graph(model, depth=1)
    assert ids(shallow) == ["tok", "pos", "blocks", "ln_f", "head"]
    assert shallow.node("blocks").params == sum(p.numel() for p in model.blocks.parameters())
    assert shallow.clusters == ()


def test_model_without_children_is_one_node():
    model, _ = example("my_linear")
    g = modscope.graph(model)
    assert [(n.kind, n.label, n.params) for n in g.nodes] == [(NodeKind.MODULE, "MyLinear", 5 * 3 + 3)]


# --- dataflow -------------------------------------------------------------------------------------------


def test_dataflow_of_a_sequential_mlp():
    model, args = example("fashion_mnist_mlp")
    g = modscope.graph(model, args)
    assert g.mode is GraphMode.DATAFLOW
    assert ids(g) == [
        "input:x", "flatten", "linear_relu_stack.0", "linear_relu_stack.1", "linear_relu_stack.2",
        "linear_relu_stack.3", "linear_relu_stack.4", "output:output",
    ]
    assert ("input:x", "flatten", "1x1x28x28") in edges(g)
    assert ("flatten", "linear_relu_stack.0", "1x784") in edges(g)
    assert ("linear_relu_stack.4", "output:output", "1x10") in edges(g)
    assert [c.id for c in g.clusters] == ["linear_relu_stack"]


def test_functional_calls_in_a_custom_forward_become_op_nodes():
    model, args = example("mlp")  # out(F.relu(hidden(X)))
    g = modscope.graph(model, args)
    relu = next(n for n in g.nodes if n.kind is NodeKind.OP)
    assert (relu.label, relu.cluster) == ("relu", "")
    assert edges(g) == {
        ("input:X", "hidden", "2x20"), ("hidden", relu.id, "2x256"), (relu.id, "out", "2x256"),
        ("out", "output:output", "2x10"),
    }


def test_parameters_read_by_ops_are_named():
    model, args = example("my_linear")  # relu(matmul(X, weight.data) + bias)
    g = modscope.graph(model, args)
    ops = {n.label: n for n in g.nodes if n.kind is NodeKind.OP}
    assert list(ops) == ["matmul", "add", "relu"]
    assert ops["matmul"].uses == ("weight",) and ops["add"].uses == ("bias",)


def test_data_dependent_loop_and_reused_module():
    model, args = example("fixed_hidden_mlp")
    g = modscope.graph(model, args)
    linear = g.node("linear")
    assert linear.calls == 2, "one node for the reused Linear, called twice"
    assert ids(g, NodeKind.MODULE) == ["linear"]
    ops = {n.label: n for n in g.nodes if n.kind is NodeKind.OP}
    assert set(ops) == {"matmul", "add", "relu", "div_", "sum"}, "the loop condition is pruned"
    div = ops["div_"]
    assert div.calls >= 1 and (div.id, div.id, "2x20") in edges(g), "the loop is a self-edge"
    assert (ops["relu"].id, "linear", "2x20") in edges(g), "second call of the reused Linear"
    assert ops["matmul"].uses == ("rand_weight",)
    # The number of loop iterations depends on the data; the graph's shape does not.
    other = modscope.graph(model, (args[0] * 1000,))
    assert len(other.nodes) == len(g.nodes) and other.node(div.id).calls > div.calls


def test_chimera_nests_control_flow_inside_clusters():
    model, args = example("chimera")
    g = modscope.graph(model, args)
    assert [c.id for c in g.clusters] == ["0", "0.net", "2"]
    assert g.node("2.linear").calls == 2 and g.node("2.linear").cluster == "2"
    assert any(n.label == "div_" and n.cluster == "2" for n in g.nodes)


def test_multi_input_model_joins_at_cat():
    model, args = example("image_with_metadata")
    g = modscope.graph(model, args)
    assert ids(g, NodeKind.INPUT) == ["input:image", "input:metadata"]
    cat = next(n for n in g.nodes if n.label == "cat")
    assert {(s, d) for s, d, _ in edges(g) if d == cat.id} == {
        ("image_encoder.6", cat.id), ("meta_encoder.1", cat.id)
    }
    assert (cat.id, "classifier", "1x32") in edges(g)


def test_multi_output_models_name_each_output():
    model, args = example("two_heads")
    g = modscope.graph(model, args)
    assert ids(g, NodeKind.OUTPUT) == ["output:output[0]", "output:output[1]"]
    assert ("cls_head", "output:output[0]", "1x10") in edges(g)
    sigmoid = next(n for n in g.nodes if n.label == "sigmoid")
    assert ("box_head", sigmoid.id, "1x4") in edges(g) and (sigmoid.id, "output:output[1]", "1x4") in edges(g)
    assert {d for s, d, _ in edges(g) if s == "backbone.6"} == {"cls_head", "box_head"}

    model, args = example("dict_output")
    g = modscope.graph(model, args)
    assert ids(g, NodeKind.OUTPUT) == ["output:output['logits']", "output:output['embedding']"]
    assert {s for s, d, _ in edges(g) if d.startswith("output:")} == {"classifier", "embed"}


def test_keyword_inputs_and_unused_parameters():
    model, args = example("param_dict_dense")
    g = modscope.graph(model, modscope.ModelInputs(args, {"choice": "linear3"}))
    (op,) = [n for n in g.nodes if n.kind is NodeKind.OP]
    assert op.uses == ("params.linear3",)
    assert ("input:x", op.id, "1x4") in edges(g) and (op.id, "output:output", "1x2") in edges(g)


def test_unet_skips_and_per_call_nodes_for_parameter_free_modules():
    model, args = example("unet")
    g = modscope.graph(model, args, depth=1)  # depth counts called modules: down.0 is at depth 1
    assert ids(g, NodeKind.MODULE) == [
        "down.0", "pool", "down.1", "pool#2", "down.2", "pool#3", "bottleneck", "upsample.0", "up.0",
        "upsample.1", "up.1", "upsample.2", "up.2", "head",
    ]
    assert g.node("pool#3").call == 3
    cats = [n.id for n in g.nodes if n.label == "cat"]
    assert len(cats) == 3, "one cat per iteration of the zip loop"
    assert {s for s, d, _ in edges(g) if d == cats[0]} == {"down.2", "upsample.0"}
    assert {s for s, d, _ in edges(g) if d == cats[2]} == {"down.0", "upsample.2"}
    assert g.clusters == (), "ModuleLists are never called: no cluster for them"


def test_opaque_container_becomes_one_node():
    """A module whose forward never calls its children (MultiheadAttention) is drawn as one box."""

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.norm = nn.LayerNorm(16)

        def forward(self, x):
            return self.norm(x + self.attn(x, x, x, need_weights=False)[0])

    g = modscope.graph(Encoder(), torch.randn(1, 5, 16))
    attn = g.node("attn")
    assert (attn.kind, attn.type, attn.detail) == (NodeKind.MODULE, "MultiheadAttention", "d16 h4")
    assert not any(n.id.startswith("attn/") or n.id.startswith("attn.") for n in g.nodes)
    assert ("input:x", "attn", "1x5x16") in edges(g)


def test_transformer_blocks_collapse_into_one_x32_cluster():
    model, args = example("tiny_gpt")
    g = modscope.graph(model, args)
    (run,) = [c for c in g.clusters if c.repeat > 1]
    assert (run.id, run.label, run.repeat) == ("blocks.0", "blocks.0-31", 32)
    assert not any(n.id.startswith("blocks.1") for n in g.nodes)
    assert ("blocks.0/add#2", "ln_f", "1x16x64") in edges(g), "the last block's output leaves from block 0"
    assert len(g.nodes) < 30
    tied = [e for e in g.edges if e.kind is EdgeKind.TIED]
    assert [(e.src, e.dst) for e in tied] == [("tok", "head")]
    assert g.node("head").tied == ("head.weight",)

    expanded = modscope.graph(model, args, collapse=False)
    assert sum(1 for c in expanded.clusters if c.type == "Block") == 32


def test_blocks_that_do_not_chain_are_not_collapsed():
    class Parallel(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            return sum(branch(x) for branch in self.branches)

    g = modscope.graph(Parallel(), torch.randn(2, 4))
    assert ids(g, NodeKind.MODULE) == ["branches.0", "branches.1", "branches.2"]
    assert all(n.repeat == 1 for n in g.nodes)


def test_depth_limits_recording_to_whole_blocks():
    model, args = example("chimera")
    g = modscope.graph(model, args, depth=1)
    assert ids(g, NodeKind.MODULE) == ["0", "1", "2"]
    assert ids(g, NodeKind.OP) == [], "ops inside depth-1 modules are part of those modules"
    assert g.node("0").type == "NestMLP" and g.node("0").params == sum(p.numel() for p in model[0].parameters())


@pytest.mark.slow
def test_resnet50_is_readable():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet50()
    x = torch.randn(1, 3, 224, 224)
    g = modscope.graph(model, x, depth=2)
    assert ids(g, NodeKind.MODULE) == [
        "conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
        "layer4.0", "layer4.1", "avgpool", "fc",
    ]
    assert [g.node(f"layer{i}.1").repeat for i in (1, 2, 3, 4)] == [2, 3, 5, 2]
    assert g.node("layer3.1").label == "layer3.1-5"
    full = modscope.graph(model, x)
    assert len(full.nodes) < 110, "repeated bottlenecks are drawn once"
    assert sum(1 for n in full.nodes if n.label == "add_") == 8  # one residual add per distinct block
    bottleneck = {n.id for n in full.nodes if n.cluster == "layer1.0"}
    assert {"layer1.0.relu", "layer1.0.relu#2", "layer1.0.relu#3"} <= bottleneck


@pytest.mark.slow
def test_vit_b_16_is_readable():
    torchvision = pytest.importorskip("torchvision")
    g = modscope.graph(torchvision.models.vit_b_16(), torch.randn(1, 3, 224, 224))
    (run,) = [c for c in g.clusters if c.repeat > 1]
    assert (run.label, run.repeat, run.type) == ("encoder.layers.encoder_layer_0-11", 12, "EncoderBlock")
    attn = g.node("encoder.layers.encoder_layer_0.self_attention")
    assert (attn.kind, attn.detail) == (NodeKind.MODULE, "d768 h12")
    labels = {n.label for n in g.nodes if n.kind is NodeKind.OP}
    assert {"reshape", "permute", "cat", "add", "getitem"} <= labels
    assert next(n for n in g.nodes if n.label == "cat").uses == ("class_token",)
    assert len(g.nodes) < 30


def test_to_dict_schema():
    model, args = example("two_heads")
    doc = modscope.graph(model, args, depth=1).to_dict()
    assert doc["schema"] == "modscope.graph/1"
    assert doc["mode"] == "dataflow" and doc["depth"] == 1 and doc["model"]["type"] == "TwoHeads"
    assert {"id", "kind", "label", "cluster", "module", "type", "detail", "params", "calls", "repeat"} <= set(
        doc["nodes"][0]
    )
    assert doc["edges"][0] == {"src": "input:x", "dst": "backbone", "label": "1x3x32x32", "kind": "data"}


def test_bad_arguments():
    model, _ = example("mlp")
    with pytest.raises(UsageError):
        modscope.graph(model, depth=-1)
    with pytest.raises(UsageError):
        modscope.graph(model, color="rainbow")
    with pytest.raises(UsageError):
        modscope.graph(model, rankdir="diagonal")
    with pytest.raises(UsageError):
        modscope.graph("not a model")


# --- the no-side-effect contract ------------------------------------------------------------------------

_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _state(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "hooks": [len(getattr(m, t)) for m in model.modules() for t in _HOOK_TABLES],
        "tensors": {
            k: (id(v), v.requires_grad, v.grad, v.device, v.dtype, v.detach().clone())
            for k, v in [*model.named_parameters(), *model.named_buffers()]
        },
        "modes_stack": torch._C._len_torch_function_stack(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["modes"] == before["modes"], "train/eval modes changed"
    assert after["hooks"] == before["hooks"], "hooks left behind"
    assert after["modes_stack"] == before["modes_stack"], "a TorchFunctionMode was left active"
    assert after["grad_enabled"] == before["grad_enabled"]
    for name, (ident, rg, grad, device, dtype, value) in before["tensors"].items():
        a_ident, a_rg, a_grad, a_device, a_dtype, a_value = after["tensors"][name]
        assert (a_ident, a_rg, a_grad, a_device, a_dtype) == (ident, rg, grad, device, dtype), name
        assert torch.equal(a_value, value), f"{name} changed (running statistics updated?)"


@pytest.mark.parametrize("name", ["unet", "chimera", "two_heads", "resnet18_finetune"])
def test_graph_leaves_the_model_as_it_was(name):
    model, args = example(name)
    model.train()  # BatchNorm in train mode would update running stats if the pass ran in train mode
    before = _state(model)
    modscope.graph(model, args)
    modscope.graph(model, args, depth=1)
    modscope.graph(model)
    _assert_same(before, _state(model))


def test_forward_error_restores_everything():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            return F.linear(self.bn(self.fc(x)), torch.zeros(3, 5))  # shape mismatch

    model = Broken().train()
    before = _state(model)
    with pytest.raises(ForwardError, match="forward pass raised RuntimeError"):
        modscope.graph(model, torch.randn(2, 4))
    _assert_same(before, _state(model))
    assert torch.ones(2, 2).add(1).sum().item() == 8  # torch functions work normally afterwards


def test_error_inside_a_leaf_module_restores_everything():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2))
    before = _state(model)
    with pytest.raises(ForwardError):
        modscope.graph(model, torch.randn(1, 4))
    _assert_same(before, _state(model))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_dataflow_is_refused_with_a_reason():
    model = torch.jit.script(nn.Sequential(nn.Linear(2, 2)))
    assert [n.id for n in modscope.graph(model).nodes] == ["0"]
    with pytest.raises(UsageError, match="TorchScript"):
        modscope.graph(model, torch.randn(1, 2))


def test_op_types_name_the_function_called():
    model, args = example("param_list_dense")
    (op,) = [n for n in modscope.graph(model, args).nodes if n.kind is NodeKind.OP]
    assert (op.label, op.type, op.calls) == ("mm", "torch.mm", 4)
