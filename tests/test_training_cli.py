"""The real CLI in a subprocess for grads, nan and time: output, JSON, exit codes and error paths."""
from __future__ import annotations

import json

import pytest
import torch

MODELS = "tests/training_models.py"


def test_grads_finds_unused_branch(cli):
    result = cli("grads", f"{MODELS}:UnusedBranch", "--input", "4,8")
    assert result.returncode == 1, result.stderr
    assert "unused.weight" in result.stdout and "no_grad" in result.stdout and "FAILED" in result.stdout
    assert "vanishing < 1e-08" in result.stdout  # thresholds are printed


def test_grads_ok_json_and_thresholds(cli):
    result = cli("grads", "examples/lenet.py:LeNet", "--input", "2,1,28,28", "--loss", "cross-entropy",
                 "--target", "2:int64[0,10)", "--exploding", "1e9", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "modscope.grads/1" and doc["ok"] is True
    assert doc["loss"]["kind"] == "cross-entropy" and doc["thresholds"]["exploding"] == 1e9
    assert doc["model"] == {"type": "LeNet", "target": "examples/lenet.py:LeNet"}


def test_grads_frozen_backbone_and_plot(cli, tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("matplotlib")
    plot = tmp_path / "flow.png"
    result = cli("grads", "examples/resnet_finetune.py:resnet18_finetune", "--input", "1,3,224,224",
                 "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert "frozen layers" in result.stdout and "OK" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG") and str(plot) in result.stderr


def test_grads_params_table(cli):
    result = cli("grads", f"{MODELS}:ZeroGrad", "--input", "2,8", "--params")
    assert result.returncode == 1
    assert "Parameters" in result.stdout and "zero" in result.stdout


def test_nan_exit_codes(cli):
    result = cli("nan", f"{MODELS}:NanInLayer", "--input", "16,8")
    assert result.returncode == 1, result.stderr
    assert "first non-finite in log (Log)" in result.stdout
    result = cli("nan", f"{MODELS}:InfInBackward", "--input", "16,8", "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["schema"] == "modscope.nan/1" and doc["forward"] is None and doc["backward"]["module"] == "sqrt"
    result = cli("nan", f"{MODELS}:InfInBackward", "--input", "16,8", "--no-backward")
    assert result.returncode == 0 and "OK" in result.stdout
    result = cli("nan", "examples/lenet.py:LeNet", "--input", "1,1,28,28")
    assert result.returncode == 0 and "no NaN or Inf" in result.stdout


def test_nan_in_checkpoint_weights(cli, tmp_path):
    from tests.training_models import InplaceReLU

    state = InplaceReLU().state_dict()
    state["net.2.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "bad.pt")
    result = cli("nan", f"{MODELS}:InplaceReLU", "--weights", str(tmp_path / "bad.pt"), "--input", "4,8",
                 "--no-backward", "--json")
    assert result.returncode == 1, result.stderr
    event = json.loads(result.stdout)["forward"]
    assert (event["module"], event["origin"]) == ("net.2", "module")


def test_time_table_and_json(cli):
    result = cli("time", f"{MODELS}:KnownTimes", "--input", "2,8", "--backward", "--warmup", "1", "--repeat",
                 "3", "--top", "2")
    assert result.returncode == 0, result.stderr
    assert "Slowest 2 of 7 modules" in result.stdout and "bwd self" in result.stdout
    result = cli("time", "examples/lenet.py:LeNet", "--input", "1,1,28,28", "--repeat", "2", "--json")
    doc = json.loads(result.stdout)
    assert doc["schema"] == "modscope.time/1" and doc["backward"] is None and len(doc["layers"]) == 14


@pytest.mark.parametrize(
    "args, message",
    [
        (("grads", f"{MODELS}:UnusedBranch"), "give its input with --input"),
        (("nan", f"{MODELS}:UnusedBranch"), "give its input with --input"),
        (("grads", f"{MODELS}:UnusedBranch", "--input", "4,8", "--target", "4:int64[0,2)"),
         "--target applies to --loss cross-entropy only"),
        (("grads", f"{MODELS}:UnusedBranch", "--input", "4,8", "--loss", "cross-entropy", "--target", "3"),
         "--target has shape"),
        (("grads", f"{MODELS}:UnusedBranch", "--input", "4,8", "--vanishing", "10", "--exploding", "1"),
         "--vanishing must be"),
        (("grads", f"{MODELS}:UnusedBranch", "--input", "4,8", "--plot", "flow.jpg"), "must end in"),
        (("grads", f"{MODELS}:Raises", "--input", "4,8"), "forward raised RuntimeError: boom"),
        (("time", f"{MODELS}:Raises", "--input", "4,8"), "forward raised RuntimeError: boom"),
        (("nan", f"{MODELS}:Raises", "--input", "4,8"), "forward raised RuntimeError: boom"),
        (("time", f"{MODELS}:UnusedBranch", "--input", "4,8", "--repeat", "0"), "--repeat"),
    ],
)
def test_usage_errors_exit_2(cli, args, message):
    result = cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert result.stdout == ""


def test_bad_loss_choice(cli):
    result = cli("grads", f"{MODELS}:UnusedBranch", "--input", "4,8", "--loss", "hinge")
    assert result.returncode == 2 and "hinge" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_time_cuda_without_gpu(cli):
    result = cli("time", "examples/lenet.py:LeNet", "--input", "1,1,28,28", "--device", "cuda")
    assert result.returncode == 2
    assert "no CUDA device is available" in result.stderr
