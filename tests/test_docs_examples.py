"""The docs cannot drift: every console example that shows output is run and must print what the page shows.

How examples are found, run, compared, marked and rewritten: tests/console_examples.py. To accept new output
after a deliberate change: ``MODSCOPE_UPDATE_DOCS=1 pytest tests/test_docs_examples.py`` (then read the diff).
"""
from __future__ import annotations

import difflib
import os
import re
import shutil

import pytest
import torch

from tests import console_examples as ce
from tests.conftest import REPO

UPDATE = os.environ.get("MODSCOPE_UPDATE_DOCS") == "1"
SLOW = os.environ.get("MODSCOPE_DOCS_SLOW") == "1"
EXAMPLES = [e for e in ce.examples() if e.shows_output]
PICTURE = REPO / "docs" / "img" / "chimera.svg"


def _why_not_run(example) -> str | None:
    if example.marker == "skip":
        return f"marked skip: {example.reason}"
    if example.marker == "slow" and not SLOW:
        return f"marked slow ({example.reason}): MODSCOPE_DOCS_SLOW=1 runs it"
    if example.marker == "gpu" and not torch.cuda.is_available():
        return f"marked gpu ({example.reason}): no CUDA device"
    if any(re.search(r"\|\s*jq\b", step.command) for step in example.steps) and shutil.which("jq") is None:
        return "needs jq (make test installs it)"
    return None


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_console_example_prints_what_the_page_shows(example, tmp_path):
    reason = _why_not_run(example)
    if reason:
        pytest.skip(reason)
    reals = [ce.normalised(out, tmp_path) for out in ce.run(example, tmp_path)]  # one block at a time: two
    # at once made torch's thread pools fight on a busy 2-core machine (5x slower)
    if UPDATE:
        ce.update(example, reals)
        _update_picture(example, tmp_path)
        return
    problems = []
    for step, real in zip(example.steps, reals):
        if step.shown and not ce.matches(step.shown, real):
            diff = difflib.unified_diff(ce.normalised("\n".join(step.shown)).splitlines(), real.splitlines(),
                                        "shown", "real", lineterm="", n=2)
            problems.append(f"$ {step.command}\n" + "\n".join(diff))
    assert not problems, (f"{example.id}: the page shows other output than the command prints "
                          "(MODSCOPE_UPDATE_DOCS=1 pytest tests/test_docs_examples.py rewrites it):\n\n"
                          + "\n\n".join(problems))
    _check_picture(example, tmp_path)


def _picture_step(example):
    for step in example.steps:
        if "chimera.svg" in step.command and step.command.startswith("modscope graph"):
            return step
    return None


def _labels(svg: str) -> list[str]:
    """The texts drawn in an SVG, sorted: what a reader sees, without Graphviz's coordinates. The count of
    the while loop's op (a label of its own, ``5 calls``) depends on the random initial weights: masked."""
    texts = (re.sub(r"\s+", " ", t).strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg))
    return sorted(re.sub(r"^\d+ calls$", "N calls", t) for t in texts)


def _check_picture(example, folder):
    """The README's picture is what its command draws, and its caption says the calls the picture shows."""
    if _picture_step(example) is None:
        return
    drawn = (folder / "chimera.svg").read_text()
    assert _labels(drawn) == _labels(PICTURE.read_text()), (
        "docs/img/chimera.svg is not what the README's command draws: "
        "MODSCOPE_UPDATE_DOCS=1 pytest tests/test_docs_examples.py regenerates it")
    caption = re.search(r"!\[([^\]]*)\]\(docs/img/chimera\.svg\)", (REPO / "README.md").read_text()).group(1)
    calls = sorted(re.findall(r"(\d+) calls", caption))
    assert calls == sorted(re.findall(r"(\d+) calls", " ".join(_labels(drawn)))), f"README caption: {caption!r}"


def _update_picture(example, folder):
    if _picture_step(example) is not None and _labels((folder / "chimera.svg").read_text()) != _labels(PICTURE.read_text()):
        shutil.copyfile(folder / "chimera.svg", PICTURE)


def test_the_readme_python_api_snippet_runs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    report = namespace["report"]
    assert f"# {report.totals.params}" in code  # the count the snippet's comment shows


def test_examples_are_found_and_markers_are_known():
    pages = {e.page.name for e in ce.examples()}
    assert {"README.md", "cli.md"} <= pages
    for page in ce.PAGES:
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("<!-- console"):  # a marker line (the docs also mention markers in text)
                assert ce.MARKER.match(line), f"{page.name}: unknown marker {line.strip()!r} (skip, slow, gpu)"


def test_the_comparison_can_fail_and_honours_elisions():
    real = "a\nb\nc\nd"
    assert ce.matches(["a", "...", "d"], real) and ce.matches(["a", "b", "c", "d"], real)
    assert ce.matches(["a", "b...", "c", "d"], real) and ce.matches(["a", "...", "b", "c", "d"], real)
    assert not ce.matches(["a", "b", "d"], real) and not ce.matches(["a", "...", "c"], real)
    assert not ce.matches(["x"], "") and ce.matches(["took 12.5 ms at 0x7f3a2b1c"], ce.normalised("took 3 ms at 0x55aa12cd"))
    assert ce.rewritten(["a", "  ...", "d"], "a\nb\nc\nd\ne") == ["a", "  ...", "e"]
