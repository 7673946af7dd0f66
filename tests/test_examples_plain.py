"""Plain-PyTorch checks of the bundled example models (no modscope import)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _load_catalog():
    """Import examples/catalog.py by path, whatever the current directory or sys.path."""
    name = "_test_examples_catalog"
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


catalog = _load_catalog()
EXAMPLES = {example.name: example for example in catalog.EXAMPLES}

# Expected output structure: a shape tuple for a tensor, a list for a tuple output,
# a dict for a dict output.
EXPECTED = {
    "my_linear": (2, 3),
    "affine_net": (2, 3),
    "fashion_mnist_mlp": (1, 10),
    "lenet": (1, 10),
    "alexnet": (1, 10),
    "mlp": (2, 10),
    "my_sequential": (2, 10),
    "fixed_hidden_mlp": (),
    "nest_mlp": (2, 16),
    "chimera": (),
    "param_list_dense": (1, 1),
    "param_dict_dense": (1, 4),
    "conv2d": (6, 7),
    "unet": (1, 2, 64, 64),
    "image_with_metadata": (1, 10),
    "two_heads": [(1, 10), (1, 4)],
    "dict_output": {"logits": (1, 10), "embedding": (1, 32)},
    "tiny_gpt": (1, 16, 1000),
    "resnet18_finetune": (1, 5),
}

_SPEC = re.compile(r"^(\d+(?:,\d+)*)(?::([a-z0-9]+)(?:\[(-?\d+),(-?\d+)\))?)?$")


def make_input(spec: str) -> torch.Tensor:
    """Build a random tensor from a "SHAPE[:DTYPE[lo,hi)]" spec, e.g. "1,3,32,32" or "4:int64[0,10)"."""
    match = _SPEC.match(spec.replace(" ", ""))
    assert match, f"bad input spec {spec!r}"
    shape = tuple(int(d) for d in match[1].split(","))
    dtype = getattr(torch, match[2] or "float32")
    assert isinstance(dtype, torch.dtype), f"unknown dtype in {spec!r}"
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape).bool()
    low, high = (int(match[3]), int(match[4])) if match[3] else (0, 10)
    return torch.randint(low, high, shape, dtype=dtype)


def check(output, expected, where="output"):
    """Assert that output has the expected nested structure, shapes and finite values."""
    if isinstance(expected, dict):
        assert isinstance(output, dict), where
        assert set(output) == set(expected), where
        for key, sub in expected.items():
            check(output[key], sub, f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(output, tuple) and len(output) == len(expected), where
        for i, (out, sub) in enumerate(zip(output, expected)):
            check(out, sub, f"{where}[{i}]")
    else:
        assert isinstance(output, torch.Tensor), where
        assert tuple(output.shape) == expected, f"{where}: {tuple(output.shape)} != {expected}"
        assert torch.isfinite(output).all(), f"{where} is not finite"


def build(name):
    """Build a catalogue entry, skipping cleanly when it needs a missing torchvision."""
    example = EXAMPLES[name]
    if "needs_torchvision" in example.notes:
        pytest.importorskip("torchvision")
    return example.build()


def test_catalogue_is_consistent():
    assert set(EXAMPLES) == set(EXPECTED)
    assert len(EXAMPLES) == len(catalog.EXAMPLES), "duplicate names"
    for example in catalog.EXAMPLES:
        assert example.path.is_file(), example.target
        assert example.notes <= catalog.NOTE_TAGS, example.name
        assert example.inputs and all(_SPEC.match(s) for s in example.inputs), example.name
        assert hasattr(catalog._load_file(str(example.path)), example.attr), example.target


@pytest.mark.parametrize("name", list(EXPECTED))
def test_forward(name):
    torch.manual_seed(0)
    example = EXAMPLES[name]
    model = build(name)
    assert isinstance(model, nn.Module)
    assert build(name) is not model, "build() must return a fresh module"
    args = [make_input(spec) for spec in example.inputs]
    kwargs = {key: make_input(spec) for key, spec in example.kwargs}
    model.eval()
    with torch.no_grad():
        output = model(*args, **kwargs)
    check(output, EXPECTED[name])


@pytest.mark.parametrize("name", ["fixed_hidden_mlp", "chimera"])
def test_fixed_hidden_mlp_keeps_plain_tensor(name):
    model = build(name)
    fixed = model if name == "fixed_hidden_mlp" else model[-1]
    assert isinstance(fixed.rand_weight, torch.Tensor)
    assert not isinstance(fixed.rand_weight, nn.Parameter)
    assert not any(key.endswith("rand_weight") for key in model.state_dict())
    assert all(p is not fixed.rand_weight for p in model.parameters())
    # The data-dependent loop halves X until |X|.sum() <= 1, so |X.sum()| <= 1.
    with torch.no_grad():
        assert model(torch.randn(2, 20)).abs() <= 1


def test_chimera_factory_matches_class():
    module = catalog._load_file(str(EXAMPLES["chimera"].path))

    def shapes(m):
        return [tuple(p.shape) for p in m.parameters()]

    assert type(module.chimera()) is nn.Sequential
    assert shapes(module.chimera()) == shapes(module.Chimera())


def test_my_sequential_registers_blocks():
    model = build("my_sequential")
    assert list(dict(model.named_children())) == ["0", "1", "2"]
    assert sum(p.numel() for p in model.parameters()) == (20 * 256 + 256) + (256 * 10 + 10)


def test_param_containers():
    listed = build("param_list_dense")
    assert isinstance(listed.params, nn.ParameterList) and len(listed.params) == 4
    dense = build("param_dict_dense")
    assert isinstance(dense.params, nn.ParameterDict)
    assert list(dense.params) == ["linear1", "linear2", "linear3"]
    x = torch.randn(1, 4)
    with torch.no_grad():
        assert dense(x, choice="linear2").shape == (1, 1)
        assert dense(x, choice="linear3").shape == (1, 2)


def test_conv2d_matches_torch():
    model = build("conv2d")
    x = torch.randn(6, 8)
    with torch.no_grad():
        expected = nn.functional.conv2d(x[None, None], model.weight[None, None], model.bias)
        assert torch.allclose(model(x), expected[0, 0], atol=1e-6)


def test_resnet18_finetune_trainable_params():
    model = build("resnet18_finetune")

    def count(params):
        return sum(p.numel() for p in params)

    trainable = count(p for p in model.parameters() if p.requires_grad)
    assert trainable == count(model.layer4.parameters()) + count(model.fc.parameters())
    assert model.fc.out_features == 5
    assert not any(p.requires_grad for p in model.conv1.parameters())
