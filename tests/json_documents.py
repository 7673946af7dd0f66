"""Every ``--json`` document, from the real CLI: run as ``python tests/json_documents.py OUT.json``.

One process runs the Typer app once per case (importing torch once instead of once per command: the whole
set takes a few seconds), each with its own argv, its stdout captured and its exit code kept. The
watch_gradients document has no command and comes from the API. Writes {case: {"argv", "code", "doc"}}.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tests.checkpoint_files import Small, small_state, untied, write_dcp, write_safetensors, write_torch  # noqa: E402

SMALL = "tests/checkpoint_files.py:Small"
LENET = "examples/lenet.py:LeNet"


def cases(tmp: Path) -> dict[str, list[str]]:
    a = write_torch(tmp / "a.pt", small_state(0))
    state = untied(small_state(0))
    state["body.0.weight"] = state["body.0.weight"] + 1
    state["extra"] = torch.zeros(3)
    state["body.2.bias"] = torch.zeros(5)
    state["embed.weight"] = state["embed.weight"].double()
    b = write_safetensors(tmp / "b.safetensors", state)
    ddp = write_torch(tmp / "ddp.pt", {f"module.{k}": v for k, v in small_state(1).items()})
    dcp = write_dcp(tmp / "dcp", {"model": untied(small_state(2))})
    return {
        "summary": ["summary", SMALL],
        "summary_warnings": ["summary", "examples/d2l_blocks.py:FixedHiddenMLP"],
        "summary_forward": ["summary", LENET, "--input", "1,1,28,28"],
        "summary_structures": ["summary", "examples/multi_io.py:DictOutput", "--input", "2,3,32,32"],
        "summary_failed_forward": ["summary", LENET, "--input", "1,1,20,20"],
        "summary_no_flops_no_memory": ["summary", SMALL, "--input", "2,3:int64[0,10)", "--no-flops", "--no-memory"],
        "tree": ["tree", SMALL],
        "tree_lenet": ["tree", LENET],
        "shared": ["shared", SMALL],
        "audit": ["audit", "examples/d2l_blocks.py:FixedHiddenMLP", "--expect-dtype", "bf16"],
        "checkpoint": ["summary", str(a)],
        "checkpoint_dcp": ["summary", str(dcp)],
        "checkpoint_tree": ["tree", str(b)],
        "checkpoint_tree_dcp": ["tree", str(dcp)],
        "diff": ["diff", str(a), str(b)],
        "diff_keys_only": ["diff", str(a), str(ddp), "--keys-only"],
        "check": ["check", SMALL, "--weights", str(ddp)],
        "check_mismatch": ["check", SMALL, "--weights", str(b)],
        "graph": ["graph", LENET],
        "graph_dataflow": ["graph", "examples/d2l_blocks.py:Chimera", "--input", "2,20"],
        "grads": ["grads", "examples/param_containers.py:ParamDictDense", "--input", "1,4"],
        "grads_cross_entropy": ["grads", LENET, "--input", "2,1,28,28", "--loss", "cross-entropy"],
        "nan_forward": ["nan", "tests/training_models.py:NanInLayer", "--input", "16,8"],
        "nan_backward": ["nan", "tests/training_models.py:InfInBackward", "--input", "16,8"],
        "nan_clean": ["nan", LENET, "--input", "1,1,28,28"],
        "time": ["time", LENET, "--input", "1,1,28,28", "--warmup", "1", "--repeat", "3", "--backward"],
    }


def run(argv: list[str]) -> tuple[int, str]:
    from modscope.cli import app

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = app(args=[*argv, "--json"], prog_name="modscope", standalone_mode=False)
        except SystemExit as done:
            code = done.code
    return int(code or 0), out.getvalue()


def watched() -> str:
    import modscope
    from modscope.render.json import dumps

    torch.manual_seed(0)
    model = Small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with modscope.watch_gradients(model, optimizer=opt) as watch:
        for _ in range(2):
            model(torch.randint(0, 10, (4, 3))).sum().backward()
            opt.step()
            opt.zero_grad()
    return dumps(watch.report())


def page() -> dict:
    """The page document embedded in an HTML report (with gradients and times, so every part is there)."""
    import re

    import modscope
    from examples.lenet import LeNet

    torch.manual_seed(0)
    html = modscope.report(LeNet(), inputs=torch.randn(1, 1, 28, 28), grads=True, time=True).html()
    found = re.search(r'<script type="application/json" id="modscope-page">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def main(path: str) -> None:
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, argv in cases(Path(tmp)).items():
            code, text = run(argv)
            found[case] = {"argv": argv, "code": code, "doc": json.loads(text) if text.strip() else None}
    found["grad_watch"] = {"argv": ["watch_gradients"], "code": 0, "doc": json.loads(watched())}
    found["page"] = {"argv": ["report", "examples/lenet.py:LeNet"], "code": 0, "doc": page()}
    Path(path).write_text(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1])
