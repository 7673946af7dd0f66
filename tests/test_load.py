"""The loader: every TARGET form and every failure, through the Python API."""
from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn as nn

from modscope.errors import LoadError, UnsafeLoadError, UsageError
from modscope.load.target import load_model, parse_constructor_args

USER_FILE = textwrap.dedent(
    """
    import torch.nn as nn
    from helper_sibling import WIDTH          # sibling import must work

    class Net(nn.Module):
        def __init__(self, width=WIDTH, depth=1):
            super().__init__()
            self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    class NeedsArgs(nn.Module):
        def __init__(self, vocab, dim, bias=True):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            raise ValueError("bad config: width must be even")

    class Outer:
        @staticmethod
        def build(width=3):
            return Net(width=width)

    def make_net():
        return Net(width=2)

    def not_a_factory():
        return 42

    class NotAModule:
        pass

    instance = Net(width=5)
    NUMBER = 7
    """
)


@pytest.fixture
def user_file(tmp_path):
    (tmp_path / "helper_sibling.py").write_text("WIDTH = 4\n")
    path = tmp_path / "user_models.py"
    path.write_text(USER_FILE)
    return path


def test_class_factory_instance_and_dotted_names(user_file):
    assert load_model(f"{user_file}:Net").layers[0].in_features == 4
    assert len(load_model(f"{user_file}:Net", kwargs={"depth": 3}).layers) == 3
    assert load_model(f"{user_file}:make_net").layers[0].in_features == 2
    assert load_model(f"{user_file}:Outer.build", kwargs={"width": 6}).layers[0].in_features == 6
    assert load_model(f"{user_file}:instance").layers[0].in_features == 5


def test_package_module_target():
    model = load_model("torch.nn:Linear", kwargs={"in_features": 3, "out_features": 2})
    assert isinstance(model, nn.Linear)


def test_construct_on_meta_device(user_file):
    model = load_model(f"{user_file}:Net", kwargs={"width": 4096}, device="meta")
    assert model.layers[0].weight.is_meta


def test_constructor_args_parsing():
    assert parse_constructor_args(["depth=3", "name=relu", "sizes=[1, 2]", "flag=True"], '{"width": 8}') == {
        "width": 8, "depth": 3, "name": "relu", "sizes": [1, 2], "flag": True,
    }
    with pytest.raises(UsageError, match="key=value"):
        parse_constructor_args(["3"])
    with pytest.raises(UsageError, match="JSON object"):
        parse_constructor_args([], "[1, 2]")
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_constructor_args([], "{width: 1}")


@pytest.mark.parametrize(
    "suffix, kwargs, error, pattern",
    [
        (":Nett", {}, LoadError, r"'Nett' not found .*did you mean Net"),
        (":NeedsArgs", {}, UsageError, r"needs constructor argument\(s\) vocab, dim: pass --arg vocab=\.\.\."),
        (":Net", {"colour": 1}, UsageError, r"takes no argument\(s\) colour"),
        (":Broken", {}, LoadError, r"raised ValueError: bad config: width must be even"),
        (":not_a_factory", {}, LoadError, r"returned a int, not an nn.Module"),
        (":NotAModule", {}, LoadError, r"not an nn.Module subclass"),
        (":NUMBER", {}, LoadError, r"is a int, not an nn.Module class"),
        (":instance", {"width": 1}, UsageError, r"already a module instance"),
    ],
)
def test_name_errors(user_file, suffix, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        load_model(f"{user_file}{suffix}", kwargs=kwargs)


def test_missing_file_and_import_errors(tmp_path):
    with pytest.raises(LoadError, match="file not found"):
        load_model(f"{tmp_path / 'nope.py'}:Net")
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise RuntimeError('boom in user code')\n")
    with pytest.raises(LoadError, match=r"importing .*bad.py failed: RuntimeError: boom in user code \(line 2\)"):
        load_model(f"{bad}:Net")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def broken(:\n")
    with pytest.raises(LoadError, match=r"SyntaxError.*\(line 1\)"):
        load_model(f"{syntax}:Net")
    with pytest.raises(LoadError, match="no module named 'no_such_pkg'"):
        load_model("no_such_pkg.models:Net")
    with pytest.raises(LoadError, match="cannot understand target"):
        load_model("just-words")


def test_torchscript_archive(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.ReLU())), str(path))
    with pytest.raises(UnsafeLoadError, match="TorchScript archive: loading it runs code"):
        load_model(str(path))
    model = load_model(str(path), trust=True)
    assert sum(p.numel() for p in model.parameters()) == 16


def test_pickled_module_needs_trust(tmp_path, user_file):
    path = tmp_path / "whole.pt"
    torch.save(load_model(f"{user_file}:Net"), path)
    with pytest.raises(UnsafeLoadError, match="--trust"):
        load_model(str(path))
    assert isinstance(load_model(str(path), trust=True), nn.Module)


def test_state_dict_file_is_not_a_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(LoadError, match="not a model"):
        load_model(str(path))


def test_deeply_nested_constructor_args_are_refused():
    with pytest.raises(UsageError, match="nested too deeply"):
        parse_constructor_args([], "[" * 100_000)
    with pytest.raises(UsageError, match="nested too deeply"):
        parse_constructor_args(["x=" + "(" * 500 + ")" * 500])
    with pytest.raises(UsageError, match="nested too deeply"):
        parse_constructor_args(["x=" + "-" * 100_000 + "1"])
    assert parse_constructor_args([], '{"a": "[[[[[[[[[["}') == {"a": "[[[[[[[[[["}  # brackets inside strings


def test_sys_exit_in_constructor_or_package_import_is_a_load_error(tmp_path, monkeypatch):
    path = tmp_path / "exits.py"
    path.write_text("import sys\nimport torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        sys.exit(4)\n")
    with pytest.raises(LoadError, match=r"Net\(\) called sys.exit\(4\)"):
        load_model(f"{path}:Net")
    (tmp_path / "exits_pkg.py").write_text("raise SystemExit(9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError, match=r"importing 'exits_pkg' failed: called sys.exit\(9\)"):
        load_model("exits_pkg:Net")


def test_importing_a_user_file_writes_no_bytecode(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as for most users (PYTHONDONTWRITEBYTECODE unset)
    (tmp_path / "sib.py").write_text("WIDTH = 2\n")
    (tmp_path / "model.py").write_text(
        "import torch.nn as nn\nfrom sib import WIDTH\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(WIDTH, 1)\n"
    )
    before = sys.dont_write_bytecode
    load_model(f"{tmp_path / 'model.py'}:Net")
    assert sys.dont_write_bytecode == before  # restored
    assert not (tmp_path / "__pycache__").exists()
