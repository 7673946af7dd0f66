"""The real CLI in a subprocess: every static command, JSON output, exit codes and every load error path."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from tests.conftest import REPO


def test_version_and_help(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("modscope ")
    result = cli("--help")
    assert result.returncode == 0
    for command in ("summary", "tree", "shared", "audit"):
        assert command in result.stdout


def test_import_and_help_do_not_import_torch():
    code = "import sys, modscope, modscope.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_user_atexit_handlers_and_output_survive_the_fast_exit(cli, tmp_path):
    """The CLI skips interpreter teardown once torch is loaded: atexit handlers still run, output is complete."""
    marker, late = tmp_path / "atexit-ran.txt", tmp_path / "thread-done.txt"
    model = tmp_path / "net.py"
    model.write_text(textwrap.dedent(
        f"""
        import atexit, threading, time, torch.nn as nn
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))

        def later():
            time.sleep(1.0)
            open({str(late)!r}, "w").write("done")

        threading.Thread(target=later).start()  # not a daemon: a normal exit waits for it

        class Net(nn.Sequential):
            def __init__(self):
                super().__init__(*[nn.Linear(8, 8) for _ in range(300)])
        """
    ))
    result = cli("summary", f"{model}:Net", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # all of it: the stream was flushed before leaving
    assert len(document["modules"]) == 301
    assert marker.read_text() == "ran"
    assert late.read_text() == "done"
    failing = cli("summary", f"{model}:Missing")
    assert failing.returncode == 2 and failing.stderr.startswith("modscope: error:")


def test_summary_table_and_json(cli):
    result = cli("summary", "examples/lenet.py:LeNet")
    assert result.returncode == 0, result.stderr
    assert "LeNet" in result.stdout and "61,706" in result.stdout
    result = cli("summary", "examples/lenet.py:LeNet", "--json")
    doc = json.loads(result.stdout)
    assert doc["schema"] == "modscope.summary/1"
    assert doc["model"] == {"type": "LeNet", "target": "examples/lenet.py:LeNet"}
    assert doc["totals"]["params"] == 61706
    assert set(doc["totals"]) >= {"params", "trainable_params", "frozen_params", "param_bytes", "buffers",
                                  "buffer_bytes", "modules"}
    assert set(doc["parameters"][0]) >= {"name", "module", "shape", "dtype", "device", "numel",
                                         "requires_grad", "shared_with"}
    assert set(doc["modules"][0]) >= {"name", "type", "depth", "params", "params_total", "buffers",
                                      "buffers_total"}
    assert doc["shared"] == [] and doc["warnings"] == []
    assert result.stderr == ""


def test_summary_flags_plain_tensor_in_json(cli):
    doc = json.loads(cli("summary", "examples/d2l_blocks.py:FixedHiddenMLP", "--json").stdout)
    assert [w["code"] for w in doc["warnings"]] == ["unregistered_tensor"]


def test_constructor_args_from_cli(cli):
    doc = json.loads(cli("summary", "torchvision.models:resnet18", "--arg", "num_classes=7", "--json").stdout)
    assert doc["totals"]["params"] == 11_689_512 - 1000 * 513 + 7 * 513
    doc = json.loads(cli("summary", "examples/alexnet.py:AlexNet", "--args-json", '{"num_classes": 3}',
                         "--json").stdout)
    assert doc["modules"][-1]["extra"].startswith("in_features=4096, out_features=3")


def test_tree_collapses_repeats_and_expands(cli, tmp_path):
    model_file = tmp_path / "stack.py"
    model_file.write_text(textwrap.dedent("""
        import torch.nn as nn
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.attn = nn.Linear(64, 64)
                self.mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
        class Stack(nn.Module):
            def __init__(self, n=32):
                super().__init__()
                self.layers = nn.ModuleList(Block() for _ in range(n))
                self.head = nn.Linear(64, 10)
    """))
    result = cli("tree", f"{model_file}:Stack", "--depth", "2")
    assert result.returncode == 0, result.stderr
    assert "layers.0-31  Block x32  (37.2K each)" in result.stdout
    expanded = cli("tree", f"{model_file}:Stack", "--depth", "2", "--expand").stdout
    assert "layers.31" in expanded and "x32" not in expanded
    doc = json.loads(cli("tree", f"{model_file}:Stack", "--json").stdout)
    assert doc["schema"] == "modscope.tree/1"
    assert len(doc["modules"][1]["children"]) == 32


def test_shared_command(cli, tmp_path):
    model_file = tmp_path / "tied.py"
    model_file.write_text(textwrap.dedent("""
        import torch.nn as nn
        class Tied(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(10, 4)
                self.head = nn.Linear(4, 10, bias=False)
                self.head.weight = self.embed.weight
    """))
    result = cli("shared", f"{model_file}:Tied")
    assert "embed.weight, head.weight" in result.stdout
    doc = json.loads(cli("shared", f"{model_file}:Tied", "--json").stdout)
    assert doc == {"schema": "modscope.shared/1", "model": {"type": "Tied", "target": f"{model_file}:Tied"},
                   "shared": [{"names": ["embed.weight", "head.weight"], "kind": "tied"}]}
    assert "nothing shared" in cli("shared", "examples/lenet.py:LeNet").stdout


def test_audit_exit_codes(cli, tmp_path):
    assert cli("audit", "examples/lenet.py:LeNet").returncode == 0
    result = cli("audit", "examples/lenet.py:LeNet", "--expect-dtype", "bfloat16", "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["schema"] == "modscope.audit/1" and doc["ok"] is False
    assert {f["code"] for f in doc["findings"]} == {"dtype_mismatch"}
    assert cli("audit", "examples/lenet.py:LeNet", "--expect-device", "cpu").returncode == 0
    assert cli("audit", "examples/lenet.py:LeNet", "--expect-device", "cuda").returncode == 1
    nan_file = tmp_path / "nanmodel.py"
    nan_file.write_text("import torch, torch.nn as nn\n"
                        "def build():\n    m = nn.Linear(2, 2)\n    m.weight.data[0, 0] = float('nan')\n    return m\n")
    result = cli("audit", f"{nan_file}:build")
    assert result.returncode == 1 and "nonfinite_weights" in result.stdout


@pytest.fixture
def error_files(tmp_path):
    (tmp_path / "raises.py").write_text("import torch\nraise ImportError('needs package foo')\n")
    (tmp_path / "models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, vocab, dim=4):
                super().__init__()
                self.e = nn.Embedding(vocab, dim)
        class Boom(nn.Module):
            def __init__(self):
                super().__init__()
                raise RuntimeError("cannot build on Tuesdays")
        class Plain:
            pass
    """))
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")
    return tmp_path


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: [f"{d}/missing.py:Net"], "file not found"),
        (lambda d: [f"{d}/raises.py:Net"], "ImportError: needs package foo (line 2)"),
        (lambda d: [f"{d}/models.py:Nett"], "did you mean Net"),
        (lambda d: [f"{d}/models.py:Plain"], "not an nn.Module subclass"),
        (lambda d: [f"{d}/models.py:Boom"], "raised RuntimeError: cannot build on Tuesdays"),
        (lambda d: [f"{d}/models.py:Net"], "needs constructor argument(s) vocab"),
        (lambda d: [f"{d}/models.py:Net", "--arg", "oops"], "expected key=value"),
        (lambda d: [f"{d}/whole.pt"], "Pass --trust only if you trust its source"),
        (lambda d: ["examples/lenet.py:LeNet", "--expect-dtype", "float33"], "not a torch dtype"),
    ],
)
def test_errors_are_one_line_with_exit_2(cli, error_files, make_args, message):
    args = make_args(error_files)
    command = "audit" if "--expect-dtype" in args else "summary"
    result = cli(command, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modscope: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(cli, error_files):
    result = cli("summary", f"{error_files}/models.py:Boom", "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "cannot build on Tuesdays" in result.stderr


def test_trust_loads_whole_pickled_model(cli, error_files):
    result = cli("summary", f"{error_files}/whole.pt", "--trust", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["params"] == 6


@pytest.mark.parametrize("command", ["summary", "tree", "shared", "audit"])
def test_every_example_runs_through_every_static_command(cli, command):
    from examples.catalog import EXAMPLES

    targets = [e.target for e in EXAMPLES if e.name in {"chimera", "unet", "param_dict_dense", "two_heads"}]
    for target in targets:
        result = cli(command, target, "--json")
        assert result.returncode == 0, (target, result.stderr)
        assert json.loads(result.stdout)["schema"].startswith(f"modscope.{command}/")


def test_torchscript_archive_target(cli, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
        torch.jit.save(scripted, str(tmp_path / "net.ts"))
    refused = cli("summary", str(tmp_path / "net.ts"), "--json")  # loading TorchScript runs its code
    assert refused.returncode == 2 and "pass --trust only if you trust its source" in refused.stderr, refused.stderr
    result = cli("summary", str(tmp_path / "net.ts"), "--json", "--trust")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["params"] == 16 + 5
    assert result.stderr == ""
