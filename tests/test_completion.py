"""Shell completion: TARGET candidates (files, folders, the :Names a file defines, read by ast), the real
command's completion protocol in a subprocess, and the script Typer prints and installs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modscope.cli.completion import complete_path, complete_target
from tests.conftest import REPO

BIN = Path(sys.executable).parent  # the console script pip installed beside this python


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_a_file_name_and_a_name_prefix():
    assert complete_target("examples/lenet.py:") == ["examples/lenet.py:LeNet"]
    assert complete_target("examples/lenet.py:Le") == ["examples/lenet.py:LeNet"]
    assert complete_target("examples/lenet.py:Res") == []
    assert complete_target("examples/d2l_blocks.py:M") == ["examples/d2l_blocks.py:MLP", "examples/d2l_blocks.py:MySequential"]
    assert complete_target("examples.lenet:") == ["examples.lenet:LeNet"]  # package.module, found on the path
    assert complete_target("nosuch.py:") == []


def test_path_prefixes():
    listing = complete_target("examples/")
    assert "examples/lenet.py" in listing and "examples/unet.py" in listing
    assert not any("__pycache__" in c or c.endswith(".pyc") for c in listing)
    assert complete_target("examples/alex") == ["examples/alexnet.py:AlexNet"]  # one file: its names at once
    assert complete_target("examples/d2l_b")[:2] == ["examples/d2l_blocks.py:MLP", "examples/d2l_blocks.py:MySequential"]
    assert complete_target("examples/nothing-like-this") == []
    assert complete_path("examples/alex") == ["examples/alexnet.py"]  # --weights: files, no names


def test_names_come_from_the_source_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "nets.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()
        import torch.nn as nn
        class Encoder(nn.Module):
            @classmethod
            def small(cls):
                return cls()
            def _private(self):
                pass
        def encoder_factory():
            return Encoder()
        default = Encoder()
        _hidden = 1
    """))
    target = str(tmp_path / "pkg" / "nets.py")
    names = [c.rpartition(":")[2] for c in complete_target(target + ":")]
    assert names == ["Encoder", "encoder_factory", "default"]
    assert complete_target(target + ":Encoder.") == [target + ":Encoder.small"]
    lone = complete_target(str(tmp_path) + "/p")  # a lone folder is opened, then its lone file's names
    assert lone == [f"{target}:Encoder", f"{target}:encoder_factory", f"{target}:default"]
    assert not marker.exists()


def _complete(env: dict) -> str:
    done = subprocess.run(
        [str(BIN / "modscope")], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_real_command_answers_bash_and_zsh_completion_requests():
    # bash splits `examples/lenet.py:Le` at the colon; the answer replaces the last word only
    bash = {"_MODSCOPE_COMPLETE": "complete_bash", "COMP_WORDS": "modscope summary examples/lenet.py : Le", "COMP_CWORD": "4"}
    assert _complete(bash).split() == ["LeNet"]
    assert _complete({**bash, "COMP_WORDS": "modscope summary examples/lenet.py :", "COMP_CWORD": "3"}).split() == [":LeNet"]
    assert _complete({**bash, "COMP_WORDS": "modscope diff examples/alex", "COMP_CWORD": "2"}).split() == [
        "examples/alexnet.py:AlexNet"
    ]
    zsh = {"_MODSCOPE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "modscope grads examples/lenet.py:Le"}
    assert _complete(zsh).strip() == """_arguments '*: :(("examples/lenet.py\\\\:LeNet"))'"""


@pytest.mark.skipif(not Path("/bin/bash").exists() and not Path("/usr/bin/bash").exists(), reason="needs bash")
def test_show_completion_prints_a_script_bash_runs(tmp_path):
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", "HOME": str(tmp_path)}
    shown = subprocess.run(
        [str(BIN / "modscope"), "--show-completion", "bash"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "complete -o default -F _modscope_completion modscope" in shown.stdout
    script = tmp_path / "modscope.bash"
    script.write_text(shown.stdout)
    # the words as bash's readline hands them over for `modscope summary examples/lenet.py:Le<TAB>`
    probe = (
        f"source {script}; COMP_WORDS=(modscope summary examples/lenet.py : Le); COMP_CWORD=4; "
        "_modscope_completion modscope; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    ran = subprocess.run(
        ["bash", "--norc", "-c", probe], cwd=REPO, capture_output=True, text=True,
        env={**env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert ran.returncode == 0 and ran.stdout.split() == ["LeNet"], ran.stderr
    installed = subprocess.run(
        [str(BIN / "modscope"), "--install-completion", "bash"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / ".bash_completions" / "modscope.sh").read_text().strip() == shown.stdout.strip()
    assert f"source '{tmp_path / '.bash_completions' / 'modscope.sh'}'" in (tmp_path / ".bashrc").read_text()
