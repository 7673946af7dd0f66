"""The HTML report (issue #15): build time, file size, and time to first paint in headless Chromium.

python -m bench.html_report [--shots]   (--shots also writes docs/img/report_lenet.png and report_resnet18.png)

"painted" is the page's own ``modscope-painted`` mark (set in the first animation frame after the tree, graph and
findings are drawn: the page a person sees), "FCP" Chromium's first contentful paint (the header, before the data
is read); both are medians over fresh browser contexts opened from file:// URLs.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import modscope
from bench.common import REPO, print_table

LOADS = 5


def _pages(folder: Path) -> list[tuple[str, Path, float]]:
    sys.path.insert(0, str(REPO))
    import torchvision

    from examples.lenet import LeNet
    from tests.html_models import Wide

    torch.manual_seed(0)
    made = []
    for name, build in (
        ("LeNet (--input --grads --time)", lambda p: modscope.report(LeNet(), torch.randn(1, 1, 28, 28), grads=True,
                                                                     time=True, path=p, target="examples/lenet.py:LeNet")),
        ("resnet18 (--input, dataflow graph)", lambda p: modscope.report(
            torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), path=p, target="torchvision.models:resnet18")),
        ("50,000 modules (no graph)", lambda p: modscope.report(Wide(), graph=False, path=p)),
        ("50,000 modules (graph to depth 2)", lambda p: modscope.report(Wide(), path=p)),
    ):
        path = folder / f"page{len(made)}.html"
        start = time.perf_counter()
        build(path)
        made.append((name, path, time.perf_counter() - start))
    return made


def _load(browser, path: Path) -> tuple[float, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_function("performance.getEntriesByName('modscope-painted').length > 0")
    ready = page.evaluate("performance.getEntriesByName('modscope-painted')[0].startTime")
    fcp = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: NaN}).startTime")
    context.close()
    return ready, fcp


def _shot(browser, path: Path, out: Path, select: str, height: int) -> None:
    from PIL import Image

    context = browser.new_context(viewport={"width": 1280, "height": height})
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready]")
    page.evaluate(f"window.modscopeSelect({select!r})")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out))
    context.close()
    Image.open(out).convert("RGB").quantize(colors=96).save(out, optimize=True)  # a small file for the README


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: Playwright for Python is not installed (pip install -e '.[test]')")
        return
    if shutil.which("chromium") is None:
        print("skipped: no chromium on PATH (make chromium)")
        return

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        pages = _pages(Path(tmp))
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=args)
        rows = []
        for name, path, build in pages:
            loads = [_load(browser, path) for _ in range(LOADS)]
            ready = statistics.median(r for r, _ in loads)
            fcp = statistics.median(f for _, f in loads)
            rows.append([name, f"{build:.1f} s", f"{path.stat().st_size / 2**20:.2f} MiB", f"{fcp:.0f} ms", f"{ready:.0f} ms"])
        if "--shots" in argv:
            img = REPO / "docs" / "img"
            _shot(browser, pages[0][1], img / "report_lenet.png", "net.3", 860)
            _shot(browser, pages[1][1], img / "report_resnet18.png", "layer2.0.conv1", 1300)
        browser.close()
    print_table(
        f"HTML report: build (modscope.report, CPU), file size, first paint in headless Chromium (median of {LOADS})",
        ["page", "build", "file", "FCP", "painted (tree drawn)"], rows,
    )


if __name__ == "__main__":
    main()
