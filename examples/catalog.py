"""Machine-readable catalogue of the bundled example models, used by the test-suite and the demo.

Input specs are CLI strings "SHAPE[:DTYPE]": a comma-separated integer shape, optionally
followed by a torch dtype name (default float32); integer dtypes may give a half-open value
range, e.g. "1,16:int64[0,10)".
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Tags an example may carry in `Example.notes`.
NOTE_TAGS = frozenset({
    "unregistered_tensor",  # keeps a plain tensor attribute (not a parameter or buffer)
    "data_dependent",       # Python control flow depends on tensor values
    "reused_module",        # the same submodule is called more than once per forward
    "frozen",               # some parameters have requires_grad=False
    "multi_input",          # forward takes more than one tensor
    "multi_output",         # forward returns a tuple or dict
    "needs_torchvision",    # building it imports torchvision
    "tied",                 # one Parameter is registered under several names (weight tying)
})


@lru_cache(maxsize=None)
def _load_file(path: str) -> ModuleType:
    """Import a Python file by path (once) under a private module name."""
    file = Path(path)
    name = f"_modscope_examples_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Example:
    """One example model: where to find it and which inputs to feed it."""

    name: str                 # short id, e.g. "lenet"
    target: str               # CLI target relative to repo root, e.g. "examples/lenet.py:LeNet"
    inputs: tuple[str, ...]   # positional inputs as CLI specs "SHAPE[:DTYPE]", e.g. ("1,1,28,28",)
    kwargs: tuple[tuple[str, str], ...] = ()  # keyword inputs, (name, spec)
    notes: frozenset[str] = frozenset()       # tags from NOTE_TAGS

    @property
    def path(self) -> Path:
        """Absolute path of the file that defines the model."""
        return REPO_ROOT / self.target.rpartition(":")[0]

    @property
    def attr(self) -> str:
        """Name of the nn.Module subclass or zero-argument factory inside the file."""
        return self.target.rpartition(":")[2]

    def build(self):
        """Import the file and return a fresh nn.Module (class or factory called with no args)."""
        module = _load_file(str(self.path))
        return getattr(module, self.attr)()


EXAMPLES: tuple[Example, ...] = (
    Example("my_linear", "examples/affine.py:MyLinear", ("2,5",)),
    Example("affine_net", "examples/affine.py:AffineNet", ("2,5",)),
    Example("fashion_mnist_mlp", "examples/fashion_mnist_mlp.py:NeuralNetwork", ("1,1,28,28",)),
    Example("lenet", "examples/lenet.py:LeNet", ("1,1,28,28",)),
    Example("alexnet", "examples/alexnet.py:AlexNet", ("1,1,224,224",)),
    Example("mlp", "examples/d2l_blocks.py:MLP", ("2,20",)),
    Example("my_sequential", "examples/d2l_blocks.py:my_sequential", ("2,20",)),
    Example("fixed_hidden_mlp", "examples/d2l_blocks.py:FixedHiddenMLP", ("2,20",),
            notes=frozenset({"unregistered_tensor", "data_dependent", "reused_module"})),
    Example("nest_mlp", "examples/d2l_blocks.py:NestMLP", ("2,20",)),
    Example("chimera", "examples/d2l_blocks.py:Chimera", ("2,20",),
            notes=frozenset({"unregistered_tensor", "data_dependent", "reused_module"})),
    Example("param_list_dense", "examples/param_containers.py:ParamListDense", ("1,4",)),
    Example("param_dict_dense", "examples/param_containers.py:ParamDictDense", ("1,4",)),
    Example("conv2d", "examples/conv2d.py:Conv2D", ("6,8",)),
    Example("unet", "examples/unet.py:UNet", ("1,1,64,64",)),
    Example("image_with_metadata", "examples/multi_io.py:ImageWithMetadata",
            ("1,3,32,32", "1,8"), notes=frozenset({"multi_input"})),
    Example("two_heads", "examples/multi_io.py:TwoHeads", ("1,3,32,32",),
            notes=frozenset({"multi_output"})),
    Example("dict_output", "examples/multi_io.py:DictOutput", ("1,3,32,32",),
            notes=frozenset({"multi_output"})),
    Example("tiny_gpt", "examples/transformer.py:TinyGPT", ("1,16:int64[0,1000)",),
            notes=frozenset({"tied"})),
    Example("resnet18_finetune", "examples/resnet_finetune.py:resnet18_finetune", ("1,3,224,224",),
            notes=frozenset({"frozen", "needs_torchvision"})),
)


def get(name: str) -> Example:
    """Return the catalogue entry with the given short name."""
    for example in EXAMPLES:
        if example.name == name:
            return example
    raise KeyError(name)
