"""Every command of the real CLI on each zoo model's own TARGET form and default inputs: a folder holding
the Hugging Face config (what save_pretrained writes), ``timm:NAME`` with its constructor arguments, and
exits 0 or 1 (a finding), never 2 (refused) or 3 (modscope failed). In-process through the Typer app (the
same code as the console script, minus the process start): 29 models x 5 commands in subprocesses would
cost minutes of imports."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modscope.cli import app
from tests.real_zoo import HF, TIMM

pytestmark = pytest.mark.slow

COMMANDS = (
    ("summary",),
    ("audit",),
    ("grads",),
    ("nan",),
    ("time", "--repeat", "1", "--warmup", "0"),
)


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100", "NO_COLOR": "1"})
    where = f"modscope {' '.join(args)} -> exit {result.exit_code}"
    assert result.exit_code in (0, 1), f"{where}\n{result.output[-1500:]}"
    return result


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import transformers

    made = {}
    for entry in HF:
        config_name, model_name, config = entry.build.config
        cfg = getattr(transformers, config_name)(**config)
        cfg.architectures = [model_name]
        folder = tmp_path_factory.mktemp(entry.name)
        cfg.save_pretrained(folder)
        made[entry.name] = folder
    return made


@pytest.mark.parametrize("entry", HF, ids=lambda e: e.name)
def test_every_command_on_a_config_folder(entry, folders):
    for command in COMMANDS:
        _invoke(command[0], str(folders[entry.name]), *command[1:])


@pytest.mark.parametrize("entry", TIMM, ids=lambda e: e.name)
def test_every_command_on_a_timm_name(entry):
    target, kwargs, _ = entry.build.target
    for command in COMMANDS:  # default inputs: the pretrained_cfg's size, or the size a patch embedding took
        _invoke(command[0], target, "--args-json", json.dumps(kwargs), *command[1:])


_DETECTION = {"weights": None, "weights_backbone": None, "num_classes": 3, "min_size": 64, "max_size": 64}
# The zoo's torchvision models as TARGETs: (target, constructor arguments, input options). Mask R-CNN (a
# resnet50 FPN) is left to test_real_zoo.py: its five commands took 110 s here, more than the rest together.
TORCHVISION = [
    ("torchvision.models.detection:fasterrcnn_mobilenet_v3_large_fpn", _DETECTION,
     ("--inputs", "tests/zoo_inputs.py:boxes")),
    ("torchvision.models.segmentation:deeplabv3_mobilenet_v3_large",
     {"weights": None, "weights_backbone": None, "num_classes": 3}, ("--input", "2,3,64,64")),
]


@pytest.mark.parametrize("target, kwargs, given", TORCHVISION, ids=[t.rsplit(":")[-1] for t, _, _ in TORCHVISION])
def test_every_command_on_a_torchvision_factory(target, kwargs, given):
    for command in COMMANDS:  # images and targets as a user gives them: detection models demand targets in training
        extra = given if command[0] != "audit" else ()
        _invoke(command[0], target, "--args-json", json.dumps(kwargs), *extra, *command[1:])
