"""docs/testing.md runs as printed: its model project and test file pass under pytest, and the failure it
shows is the failure you get."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```', re.S | re.M)
CUDA = int(torch.cuda.is_available())  # the documented file has one test that needs a GPU
GPU_AWARE = {"passed": 11 + CUDA, "skipped": 1 - CUDA}


def _blocks() -> dict[str, str]:
    return {title: body for _, title, body in BLOCK.findall(DOC.read_text())}


def _project(pytester) -> None:
    """The documented project in pytester's folder. It runs in a subprocess: an in-process run forgets the
    modules it imported, and torch modules imported twice in one process can crash it."""
    blocks = _blocks()
    for path in ("tinygpt/model.py", "tests/test_model.py"):
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blocks[path])
    (pytester.path / "tinygpt" / "__init__.py").write_text("")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    _publish_weights(pytester.path, blocks["the published weights"])


def _publish_weights(root: Path, commands: str) -> None:
    """The documented step that saves the weights the test file checks against: `mkdir -p`, then `python -c`,
    run here in-process (a subprocess would import torch once more) with ``root`` as the working folder."""
    mkdir, python = commands.strip().splitlines()
    assert mkdir.startswith("mkdir -p ")
    (root / mkdir.removeprefix("mkdir -p ")).mkdir(parents=True, exist_ok=True)
    code = re.fullmatch(r'python -c "(.*)"', python).group(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.syspath_prepend(str(root))
        try:
            exec(code, {})
        finally:
            for name in [m for m in sys.modules if m == "tinygpt" or m.startswith("tinygpt.")]:
                del sys.modules[name]


def test_the_documented_test_file_passes_and_writes_its_snapshot(pytester):
    _project(pytester)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(**GPU_AWARE)  # the GPU test skips without CUDA
    result.stdout.fnmatch_lines(["modscope: wrote 1 snapshot(s): tests/__snapshots__/test_model/test_architecture.json"])
    pytester.runpytest_subprocess().assert_outcomes(**GPU_AWARE)


def test_the_documented_failure_is_real(pytester):
    _project(pytester)
    pytester.runpytest_subprocess().assert_outcomes(**GPU_AWARE)
    model = pytester.path / "tinygpt" / "model.py"
    untied = re.sub(r"^ +self\.head\.weight = self\.tok\.weight.*\n", "", model.read_text(), flags=re.M)
    assert untied != model.read_text()
    model.write_text(untied)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=3, passed=8 + CUDA, skipped=1 - CUDA)
    shown = [line for line in _blocks()["pytest output (abridged)"].splitlines() if line != "..."]
    result.stdout.fnmatch_lines(shown)
