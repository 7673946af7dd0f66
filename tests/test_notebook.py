"""Reports in a real notebook: a Jupyter kernel (this venv's python) runs modscope's public calls on the
bundled examples, and every report cell shows HTML with the terminal table's facts; graphs show SVG."""
from __future__ import annotations

import ast
import html
import re
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

SETUP = """
import torch, modscope
from examples.lenet import LeNet
from examples.d2l_blocks import Chimera
from examples.param_containers import ParamDictDense
torch.manual_seed(0)
model = LeNet()
x = torch.randn(2, 1, 28, 28)
"""

#: (cell source, what its HTML must show: module names and numbers that the terminal table shows too)
CELLS = [
    ("modscope.summary(model)", ["LeNet", "net.7", "Linear", "61,706"]),
    ("modscope.summary(model, inputs=x)", ["net.0", "2x1x28x28", "2x6x28x28", "1,666,080"]),
    ("modscope.audit(model, expect_dtype='bfloat16')", ["dtype_mismatch", "net.0.weight", "FAILED"]),
    ("modscope.grads(ParamDictDense(), torch.randn(1, 4))", ["params.linear2", "no_grad"]),
    ("modscope.time_layers(model, x, warmup=1, repeat=3)", ["net.7", "Linear"]),
    ("modscope.find_nonfinite(model, torch.full((1, 1, 28, 28), float('nan')))", ["net.0", "Conv2d", "NaN"]),
    ("""with modscope.watch_gradients(model) as watch:
    for _ in range(2):
        model(x).sum().backward()
model.zero_grad()
watch.report()""", ["net.11.weight", "2"]),
    ("modscope.diff(LeNet(), model)", ["net.0.weight", "10"]),
    ("modscope.check(model, Chimera())", ["net.0.weight", "FAILED"]),
    ("modscope.inspect_checkpoint(model)", ["net.7", "61,706", "241.0 KiB"]),
]
GRAPH = "modscope.graph(Chimera(), torch.randn(2, 20))"
TYPES = "sorted({type(value).__name__ for value in Out.values()})"  # IPython's Out: every cell's result


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook, run top to bottom by a real kernel registered for this interpreter in a temp dir."""
    from ipykernel.kernelspec import install

    home = tmp_path_factory.mktemp("jupyter")
    install(prefix=str(home), kernel_name="modscope-test")
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_PATH", str(home / "share" / "jupyter"))  # only this kernelspec matters
    patch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
    patch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    patch.setenv("IPYTHONDIR", str(home / "ipython"))
    patch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nb.cells += [nbformat.v4.new_code_cell(source) for source, _ in CELLS]
    nb.cells.append(nbformat.v4.new_code_cell(GRAPH))
    nb.cells.append(nbformat.v4.new_code_cell(TYPES))
    try:
        NotebookClient(nb, kernel_name="modscope-test", timeout=120, startup_timeout=60,
                       resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        patch.undo()
    nbformat.validate(nb)
    return nb


def _outputs(cell) -> dict:
    data = {}
    for output in cell.outputs:
        assert output.output_type != "error", f"{cell.source}: {output.ename}: {output.evalue}"
        if output.output_type == "execute_result":
            data.update(output.data)
    return data


@pytest.mark.parametrize("index", range(len(CELLS)), ids=[source.split("(")[0] for source, _ in CELLS])
def test_every_report_shows_its_table_as_html(executed, index):
    source, expected = CELLS[index]
    data = _outputs(executed.cells[1 + index])
    assert "text/html" in data, f"{source}: only {sorted(data)}"
    fragment = data["text/html"]
    assert "<script" not in fragment and fragment.lstrip().startswith("<pre")
    shown = _text(fragment)
    missing = [word for word in expected if word not in shown]
    assert not missing, f"{source}: the HTML lacks {missing}:\n{shown[:2000]}"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_a_graph_shows_svg(executed):
    data = _outputs(executed.cells[-2])
    assert "image/svg+xml" in data and "text/html" not in data
    svg = data["image/svg+xml"]
    assert "<svg" in svg and ">Chimera</text>" in svg and "2 calls" in svg  # the reused Linear, drawn once


def test_the_cells_cover_every_report_type_the_api_returns(executed):
    from modscope.render.views import TERMINAL_VIEWS

    shown = ast.literal_eval(_outputs(executed.cells[-1])["text/plain"])
    assert shown == sorted([t.__name__ for t in TERMINAL_VIEWS] + ["ModelGraph"])
