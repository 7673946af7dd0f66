"""Hostile and awkward input through the real CLI: every failure the input caused is exit 2 and one line.

Deep JSON, impossible --input shapes and dtypes, unreadable files, outputs that cannot be written, usage
errors, user code that calls sys.exit() or prints while the command speaks JSON, and no bytecode left
beside the user's files.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, run_modscope

MODEL = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(6)])

    def forward(self, x):
        return self.layers(x)
"""

USER_CODE = """
import os, sys
import torch.nn as nn
import helper  # a sibling module: no bytecode may be written for it either

class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

class Exits(Base):
    def forward(self, x):
        sys.exit(3)

class ExitsZero(Base):
    def forward(self, x):
        sys.exit(0)

class Custom(BaseException):
    pass

class RaisesBase(Base):
    def forward(self, x):
        raise Custom("boom")

class Interrupted(Base):
    def forward(self, x):
        raise KeyboardInterrupt

class ExitsInConstructor(nn.Module):
    def __init__(self):
        super().__init__()
        sys.exit(4)

def exiting_inputs():
    sys.exit(5)
"""

PRINTS = """
import os
import torch.nn as nn

print("the module file prints")

class Prints(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        print("the constructor prints")

    def forward(self, x):
        print("the forward prints")
        os.write(1, b"C-level write to fd 1\\n")
        return self.fc(x)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "net.py").write_text(MODEL)
    (root / "user.py").write_text(USER_CODE)
    (root / "prints.py").write_text(PRINTS)
    (root / "helper.py").write_text("VALUE = 1\n")
    (root / "exits_on_import.py").write_text("import sys\nsys.exit(7)\n")
    return root


def _one_error_line(result, code: int = 2, contains: str = "") -> str:
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: "), result.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


# --- input that is too deep, too big or exotic ------------------------------------------------------


def test_args_json_nested_100000_deep(files):
    result = run_modscope("summary", f"{files}/net.py:Net", "--args-json", "[" * 100_000)
    _one_error_line(result, contains="--args-json is nested too deeply")


def test_arg_literal_too_deep_to_parse(files):
    result = run_modscope("summary", f"{files}/net.py:Net", "--arg", "width=" + "-" * 100_000 + "1")
    _one_error_line(result, contains="--arg width")


@pytest.mark.parametrize(
    "spec, says",
    [
        ("100000,100000,100000", "more than this machine's memory"),
        ("1,3:complex32", "cannot generate complex32"),
        ("0,3", "at least 1"),
        ("99999999999999999999999,3", "more than a tensor can hold"),
        ("1,3:int8[0,1000)", "do not fit int8"),
    ],
)
def test_impossible_input_specs(files, spec, says):
    _one_error_line(run_modscope("summary", f"{files}/net.py:Net", "--input", spec), contains=says)


# --- files that cannot be read or written -----------------------------------------------------------


def _without_root_powers() -> list[str]:
    """A command prefix under which mode bits bind (root ignores them): setpriv dropping DAC overrides."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _run(*args: str, prefix: list[str] = (), preexec=None, unset: tuple[str, ...] = ()):
    """run_modscope with a command prefix, a child set-up step (a resource limit) or variables unset."""
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "modscope", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, preexec_fn=preexec,
    )


def test_unreadable_model_file(files, tmp_path):
    model = tmp_path / "secret.py"
    model.write_text(MODEL)
    model.chmod(0)
    result = _run("summary", f"{model}:Net", prefix=_without_root_powers())
    _one_error_line(result, contains=f"cannot read {model}: Permission denied")


@pytest.mark.parametrize("where", ["missing folder", "a folder", "not a folder"])
def test_graph_output_path_refused_before_any_work(files, tmp_path, where):
    output = {
        "missing folder": tmp_path / "no" / "such" / "g.dot",
        "a folder": tmp_path,
        "not a folder": files / "net.py" / "g.dot",
    }[where]
    _one_error_line(run_modscope("graph", f"{files}/net.py:Net", "-o", str(output)))
    assert not (tmp_path / "no").exists()


def test_graph_output_onto_a_full_device(files):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    _one_error_line(run_modscope("graph", f"{files}/net.py:Net", "-o", "/dev/full"), contains="No space left")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written in place, never replaced by a file


def test_graph_output_into_a_read_only_folder(files, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    result = _run("graph", f"{files}/net.py:Net", "-o", str(folder / "g.dot"), prefix=_without_root_powers())
    _one_error_line(result, contains="Permission denied")
    assert list(folder.iterdir()) == []
    folder.chmod(0o755)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_write_that_fails_part_way_keeps_the_old_file(files, tmp_path):
    output = tmp_path / "g.dot"
    output.write_text("the old graph\n")
    limit = 400  # the new DOT text is over 1 KB: the kernel cuts the write off at this size

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = _run("graph", f"{files}/net.py:Net", "--expand", "-o", str(output), preexec=limit_file_size)
    _one_error_line(result, contains="File too large")
    assert output.read_text() == "the old graph\n"
    assert [p.name for p in tmp_path.iterdir()] == ["g.dot"]  # no temporary file left behind
    written = run_modscope("graph", f"{files}/net.py:Net", "--expand", "-o", str(output))
    assert written.returncode == 0, written.stderr
    assert output.read_text().startswith("digraph") and len(output.read_bytes()) > limit


def test_grads_plot_into_a_missing_folder(files, tmp_path):
    result = run_modscope("grads", f"{files}/net.py:Net", "--input", "1,3", "--plot", str(tmp_path / "no" / "p.png"))
    _one_error_line(result, contains="does not exist")


# --- usage errors: one line, not Typer's boxed panel ------------------------------------------------


@pytest.mark.parametrize(
    "args, line",
    [
        (["summary", "x.py:Net", "--jsn"],
         "modscope: error: no such option --jsn (did you mean --json or --args-json?); see modscope summary --help"),
        (["summary"], "modscope: error: missing argument 'TARGET'; see modscope summary --help"),
        (["summry", "x.py:Net"], "modscope: error: no such command 'summry' (did you mean summary?); see modscope --help"),
        (["summary", "x.py:Net", "--input"],
         "modscope: error: option '--input' requires an argument; see modscope summary --help"),
    ],
)
def test_usage_errors_are_one_line(args, line):
    result = run_modscope(*args)
    assert _one_error_line(result) == line


def test_bad_choice_is_one_line():
    line = _one_error_line(run_modscope("summary", "x.py:Net", "--optimizer", "rmsprop"))
    assert "'--optimizer'" in line and "'rmsprop'" in line and line.endswith("; see modscope summary --help")


# --- user code that ends the run ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["summary", "grads", "nan", "time", "graph"])
def test_sys_exit_in_forward_is_the_users_error(files, command):
    result = run_modscope(command, f"{files}/user.py:Exits", "--input", "1,3")
    _one_error_line(result, contains="the model's forward called sys.exit(3)")


@pytest.mark.parametrize(
    "target, extra, says",
    [
        ("user.py:ExitsZero", ["--input", "1,3"], "the model's forward called sys.exit(0)"),  # never a silent 0
        ("user.py:RaisesBase", ["--input", "1,3"], "the model's forward raised Custom: boom"),
        ("user.py:ExitsInConstructor", [], "called sys.exit(4)"),
        ("exits_on_import.py:Net", [], "called sys.exit(7)"),
        ("user.py:Base", ["--inputs", "{files}/user.py:exiting_inputs"], "called sys.exit(5)"),
    ],
)
def test_base_exceptions_from_user_code(files, target, extra, says):
    extra = [e.format(files=files) for e in extra]
    _one_error_line(run_modscope("summary", f"{files}/{target}", *extra), contains=says)


def test_keyboard_interrupt_in_forward_stays_130(files):
    _one_error_line(run_modscope("summary", f"{files}/user.py:Interrupted", "--input", "1,3"), code=130)


@pytest.mark.parametrize(
    "args",
    [
        ["summary", "{files}/prints.py:Prints", "--input", "1,3", "--json"],
        ["grads", "{files}/prints.py:Prints", "--input", "1,3", "--json"],
        ["graph", "{files}/prints.py:Prints", "--input", "1,3", "--json"],
        ["tree", "{files}/prints.py:Prints", "--json"],
    ],
)
def test_user_prints_do_not_break_json(files, args):
    result = run_modscope(*[a.format(files=files) for a in args])
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # stdout is the document alone
    assert "the module file prints" in result.stderr and "the constructor prints" in result.stderr
    if "--input" in args:
        assert "the forward prints" in result.stderr and "C-level write to fd 1" in result.stderr


def test_user_prints_do_not_break_dot_on_stdout(files):
    result = run_modscope("graph", f"{files}/prints.py:Prints", "--input", "1,3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("digraph") and "the forward prints" not in result.stdout
    assert "C-level write" not in result.stdout and "C-level write to fd 1" in result.stderr


# --- nothing written beside the user's files ---------------------------------------------------------


def test_no_bytecode_beside_user_files(tmp_path):
    (tmp_path / "sibling.py").write_text("WIDTH = 3\n")
    (tmp_path / "model.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from sibling import WIDTH

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(WIDTH, 2)

            def forward(self, x):
                return self.fc(x)
    """))
    (tmp_path / "make.py").write_text("import torch\ndef make_inputs():\n    return torch.zeros(1, 3)\n")
    result = _run(  # with Python's own bytecode writing on, as for most users
        "summary", f"{tmp_path}/model.py:Net", "--inputs", f"{tmp_path}/make.py:make_inputs",
        unset=("PYTHONDONTWRITEBYTECODE",),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["make.py", "model.py", "sibling.py"]


def test_atomic_writes_keep_permissions_and_symlinks(tmp_path):
    from modscope.render.output import write_output

    real = tmp_path / "real.svg"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.svg"
    link.symlink_to(real)
    write_output(link, b"new", "-o")
    assert link.is_symlink() and real.read_bytes() == b"new"  # the link stays; the file it names is replaced
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.svg", "real.svg"]
