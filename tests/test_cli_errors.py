"""Errors that say what to do, through the command line: one line on stderr, exit 2, no traceback.

Each test checks the part of the message a user acts on (the closest file, the ``--input`` form, the
``--key`` that strips a prefix), and that acting on it works. The Typer app runs in-process (``cli``), which
takes the same path from argv to stderr as the installed command; what depends on the process itself (the
two front doors, the current folder on sys.path) runs in subprocesses.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from typer.testing import CliRunner

from modscope.cli import app
from tests.conftest import REPO

SCRIPT = Path(sys.executable).with_name("modscope")  # the console script pip installed beside this python
TINY_GPT = ["examples/transformer.py:TinyGPT", "--arg", "vocab=50", "--arg", "layers=1", "--arg", "context=16"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # targets are given as a user in a checkout would: examples/lenet.py:LeNet


def cli(*args: str):
    """The Typer app run in-process on ``args``, as (returncode, stdout, stderr) like a CompletedProcess."""
    done = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def _one_line(result, code: int = 2) -> str:
    """The single stderr line of a failed run (asserting exit code, no traceback, nothing on stdout)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modscope: error: ") and "Traceback" not in result.stderr
    assert not re.search(r"\(line \d+\)", lines[0]), lines[0]  # no line numbers unless they are the user's own
    return lines[0]


def test_misspelt_file_names_the_closest_existing_one():
    line = _one_line(cli("summary", "examples/lenett.py:LeNet"))
    assert line.endswith("file not found: examples/lenett.py (did you mean examples/lenet.py?)")
    line = _one_line(cli("summary", "exmples/lenet.py"))  # the folder misspelt, no :Name
    assert line.endswith("no such file or folder: exmples/lenet.py (did you mean examples/lenet.py?)")


def test_misspelt_module_names_the_closest_importable_one():
    line = _one_line(cli("summary", "examples.lenett:LeNet"))
    assert line.endswith("no module named 'examples.lenett' (did you mean examples.lenet?)")
    line = _one_line(cli("summary", "examples.lenet:Lenet"))
    assert line.endswith("'Lenet' not found in examples.lenet; did you mean LeNet?")


def test_python_file_without_name_lists_what_it_defines_without_running_it(tmp_path):
    line = _one_line(cli("summary", "examples/lenet.py"))
    assert line.endswith("name the model in it, e.g. examples/lenet.py:LeNet (classes: LeNet)")
    assert _one_line(cli("summary", "examples/lenet.py", "--trust")) == line  # no UnpicklingError
    assert _one_line(cli("summary", "examples/lenet.py:")) == line
    line = _one_line(cli("check", "examples/lenet.py:LeNet", "--weights", "examples/lenet.py"))
    assert line.endswith("examples/lenet.py is Python source, not a checkpoint; a model in it is named as examples/lenet.py:LeNet")
    model = tmp_path / "model.py"
    marker = tmp_path / "ran"
    model.write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()
        import torch.nn as nn
        class Block(nn.Module):
            pass
        class Net(Block):
            pass
        class Config:
            pass
        def build(width=4):
            return Net()
    """))
    line = _one_line(cli("summary", str(model)))
    assert line.endswith(f"e.g. {model}:Block (classes: Block, Net; factories: build)")
    assert not marker.exists()  # read with ast, never imported


def test_folder_that_is_no_checkpoint_names_a_model_in_it():
    line = _one_line(cli("summary", "examples"))
    assert line.endswith("a model defined in a file there is named as examples/affine.py:MyLinear")


@pytest.mark.parametrize("command", ["summary", "grads"])
def test_float_input_into_embedding_names_the_integer_form_with_its_size(command):
    line = _one_line(cli(command, *TINY_GPT, "--input", "2,8"))
    assert "nn.Embedding 'tok' takes integer ids in [0,50) but got float32 input 2x8" in line or (
        command == "summary" and "nn.Embedding takes integer ids in [0,50) but got float32 input 2x8" in line
    ), line
    assert line.endswith("give --input 2,8:int64[0,50)")
    assert "Expected tensor for argument" not in line
    assert cli(command, *TINY_GPT, "--input", "2,8:int64[0,50)").returncode == 0  # the advice works


def test_shape_written_as_printed_in_tables_names_the_comma_form():
    line = _one_line(cli("summary", "examples/lenet.py:LeNet", "--input", "1x1x28x28"))
    assert line.endswith("input spec '1x1x28x28': sizes are separated by commas, as in 1,1,28,28")


def test_ids_past_the_embedding_name_the_range_it_takes():
    line = _one_line(cli("time", *TINY_GPT, "--input", "2,8:int64[0,5000)", "--repeat", "1"))
    assert re.search(r"nn\.Embedding 'tok' takes integer ids in \[0,50\) but got ids in \[\d+,\d+\]", line), line
    assert line.endswith("give --input 2,8:int64[0,50)")


@pytest.fixture(scope="module")
def ddp_checkpoints(tmp_path_factory):
    from examples.lenet import LeNet

    folder = tmp_path_factory.mktemp("ddp")
    state = {f"module.{k}": v for k, v in LeNet().state_dict().items()}
    torch.save(state, folder / "ddp.pt")
    torch.save({"state_dict": state, "epoch": 3}, folder / "lightning.pt")
    return folder


@pytest.mark.parametrize("name, key", [("ddp.pt", "module"), ("lightning.pt", "state_dict.module")])
def test_wrapper_prefix_names_the_key_that_strips_it(ddp_checkpoints, name, key):
    ckpt = str(ddp_checkpoints / name)
    line = _one_line(cli("summary", "examples/lenet.py:LeNet", "--weights", ckpt))
    assert line == (
        f"modscope: error: {ckpt} does not load into LeNet: every key carries the prefix 'module.' (saved from "
        f"DistributedDataParallel/DataParallel); add --key {key} to strip it"
    )
    assert "TARGET" not in line and len(line) < 250
    fixed = cli("summary", "examples/lenet.py:LeNet", "--weights", ckpt, "--key", key, "--json")
    assert fixed.returncode == 0, fixed.stderr
    checked = cli("check", "examples/lenet.py:LeNet", "--weights", ckpt, "--key", key)
    assert checked.returncode == 0 and "OK: loads with strict=True" in checked.stdout


def test_other_key_problems_name_the_real_check_command(tmp_path):
    from examples.lenet import LeNet

    state = LeNet().state_dict()
    state.pop("net.0.bias")
    torch.save(state, tmp_path / "partial.pt")
    line = _one_line(cli("summary", "examples/lenet.py:LeNet", "--weights", str(tmp_path / "partial.pt")))
    assert line.endswith(
        f"1 missing key(s) such as 'net.0.bias'; modscope check examples/lenet.py:LeNet --weights "
        f"{tmp_path / 'partial.pt'} explains it"
    )


def test_unpickling_errors_carry_no_torch_line_numbers(tmp_path, monkeypatch):
    module = tmp_path / "gone_mod.py"
    module.write_text("import torch.nn as nn\nclass Gone(nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_mod

    torch.save(gone_mod.Gone(2, 2), tmp_path / "whole.pt")
    monkeypatch.delitem(sys.modules, "gone_mod")
    module.write_text("x = 1\n")  # the class is gone: unpickling fails inside torch
    line = _one_line(cli("summary", str(tmp_path / "whole.pt"), "--trust"))
    assert "cannot unpickle" in line and "Gone" in line
    sys.path.remove(str(tmp_path))  # now the module itself is not importable
    sys.modules.pop("gone_mod", None)
    elsewhere = _one_line(cli("summary", str(tmp_path / "whole.pt"), "--trust"))
    assert elsewhere.endswith(
        "it names a class in module 'gone_mod', which is not importable from here: run modscope from the folder "
        "that holds that module (or install it)"
    )


@pytest.mark.parametrize("door", ["python -m modscope", "modscope"])
def test_both_front_doors_resolve_package_module_targets_from_the_current_folder(door):
    command = [sys.executable, "-m", "modscope"] if door != "modscope" else [str(SCRIPT)]
    result = subprocess.run(
        [*command, "summary", "examples.lenet:LeNet", "--json"], cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["params"] == 61706
