"""The HTML report (``modscope report``) opened in a real headless Chromium (the OS's, driven by Playwright), and
its HTML read as text: embedded JSON equal to ``--json``, names that are markup shown as text and never run."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import modscope
from modscope.api.report import NEEDS_INPUTS
from modscope.render.html_report.data import script_json
from tests.conftest import REPO
from tests.html_models import HOSTILE, HOSTILE_PARAM, Hostile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDE_PAINT_BUDGET_MS = 5000  # measured ~0.4 s on the 2-core dev machine (docs/benchmarks.md): room for a busy one
LENET = ("examples/lenet.py:LeNet", "--input", "1,1,28,28")
RESNET = ("torchvision.models:resnet18", "--input", "1,3,64,64")  # small images: the same tree and graph, cheaper


def _modscope(*args: str) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", OMP_NUM_THREADS="1")  # three run side by side
    return subprocess.Popen([sys.executable, "-m", "modscope", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict:
    """The report pages, each built once: by the real CLI in parallel processes, hostile and diff in-process."""
    out = tmp_path_factory.mktemp("pages")
    a, b = _checkpoints(out)
    runs = {
        "lenet": _modscope("report", *LENET, "--grads", "--time", "-o", "-"),  # the page on stdout
        "resnet18": _modscope("report", *RESNET, "-o", str(out / "resnet18.html")),
        "lenet_json": _modscope("summary", *LENET, "--json"),
        "wide": _modscope("report", "tests/html_models.py:Wide", "--no-graph", "-o", str(out / "wide.html")),
        "missing_folder": _modscope("report", LENET[0], "-o", str(out / "missing" / "r.html")),
        "grads_no_input": _modscope("report", LENET[0], "--grads", "-o", str(out / "r.html")),
        "diff_html": _modscope("diff", str(a), str(b), "--html", str(out / "diff_cli.html")),
    }
    found = {"hostile": out / "hostile.html", "diff": out / "diff.html"}
    modscope.report(Hostile(), torch.randn(2, 4), grads=True, path=found["hostile"])
    modscope.report(a, b, path=found["diff"])
    for name, run in runs.items():
        stdout, stderr = run.communicate(timeout=300)
        found[name] = (run.returncode, stdout, stderr)
        if name in ("missing_folder", "grads_no_input", "diff_html"):
            continue
        assert run.returncode == 0, f"{name}: {stderr}"
        found[name] = stdout
        if name in ("resnet18", "wide"):
            assert stderr.startswith(f"wrote {out / name}.html (") and stdout == ""
            found[name] = out / f"{name}.html"
    assert not (out / "r.html").exists()
    found["lenet_stdout"] = found["lenet"]
    found["lenet"] = out / "lenet.html"
    found["lenet"].write_text(found["lenet_stdout"])
    return found


def _checkpoints(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    a = {"w": torch.randn(4, 4), "big": torch.randn(8), "small": torch.randn(8), "gone": torch.zeros(2),
         "same": torch.ones(3), "cast": torch.ones(2)}
    b = dict(a, big=a["big"] + 10.0, small=a["small"] + 1e-3, new=torch.zeros(1), cast=a["cast"].double())
    del b["gone"]
    torch.save(a, folder / "a.pt")
    torch.save(b, folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def _documents(html: str) -> dict:
    found = re.findall(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', html, re.S)
    return {name: json.loads(text) for name, text in found}


# ---------- the HTML as text ----------


def test_embedded_summary_is_the_json_document(pages):
    documents = _documents(pages["lenet"].read_text())
    assert documents["modscope-summary"] == json.loads(pages["lenet_json"])
    assert set(documents) == {"modscope-page", "modscope-summary", "modscope-audit", "modscope-grads", "modscope-time"}
    assert documents["modscope-grads"]["schema"] == "modscope.grads/1"
    assert {t["name"] for t in documents["modscope-time"]["layers"]} >= {"net.0", "net.11"}


def test_page_is_self_contained(pages):
    for name in ("lenet", "resnet18", "wide", "diff"):
        html = pages[name].read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), name  # no CDN, no remote resource
        assert "<link" not in html and "@import" not in html, name
        assert re.search(r'http-equiv="Content-Security-Policy" content="default-src \'none\'', html)
    assert pages["lenet_stdout"].startswith("<!DOCTYPE html>") and pages["lenet_stdout"].rstrip().endswith("</html>")


def test_hostile_names_are_escaped_everywhere(pages):
    html = pages["hostile"].read_text()
    assert HOSTILE not in html and HOSTILE_PARAM not in html  # every occurrence is escaped
    assert "<img" not in html
    assert len(re.findall(r"<script\b", html)) == 5  # page, summary, audit, grads documents + the page script
    documents = _documents(html)
    names = [m["name"] for m in documents["modscope-summary"]["modules"]]
    assert names == ["", HOSTILE, "unused"]
    assert HOSTILE_PARAM in [p["name"] for p in documents["modscope-summary"]["parameters"]]


# ---------- in the browser ----------


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python: pip install -e '.[test]'")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: `make chromium` installs the OS package")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield launched
        launched.close()


class Opened:
    """A page opened from a file:// URL with its console errors, uncaught exceptions, dialogs and requests."""

    def __init__(self, browser, path: Path, offline: bool = False):
        self.context = browser.new_context(offline=offline, viewport={"width": 1400, "height": 1000})
        self.requests: list[str] = []
        if offline:
            self.context.route(re.compile(r"^(?!file:)"), lambda route: route.abort())
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("html[data-ready]")

    def rows(self) -> list[str]:
        return self.page.eval_on_selector_all("#tree-rows .row", "rows => rows.map(r => r.dataset.name)")

    def wait_until(self, condition: str, timeout: float = 10.0) -> None:
        """Poll ``condition`` (page.wait_for_function evaluates strings, which the page's CSP forbids)."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(f"() => Boolean({condition})"):
            assert time.monotonic() < deadline, f"not true within {timeout} s: {condition}"
            time.sleep(0.05)

    def selected(self) -> str | None:
        return self.page.get_attribute("html", "data-selected")

    def close(self):
        assert self.errors == [], self.errors
        self.context.close()


@pytest.fixture
def open_page(browser):
    opened = []

    def open_(path, **kw):
        opened.append(Opened(browser, path, **kw))
        return opened[-1]

    yield open_
    for page in opened:
        page.close()  # asserts no console error and no uncaught exception


def test_lenet_tree_shows_every_module(pages, open_page):
    view = open_page(pages["lenet"])
    names = [m["name"] for m in json.loads(pages["lenet_json"])["modules"]]
    assert len(names) == 14
    assert view.rows() == names  # small enough to open whole
    assert view.page.inner_text("#row-count") == "14 of 14 modules shown"
    head = view.page.eval_on_selector_all("#tree-head button", "bs => bs.map(b => b.textContent)")
    assert head[:3] == ["module", "type", "params"] and {"FLOPs", "self time", "total time"} <= set(head)
    assert view.page.locator("#grads g.bar").count() == 10  # one bar per parameter
    assert view.page.locator("#grads-summary").inner_text().startswith("ok")


def test_sorting_orders_siblings(pages, open_page):
    view = open_page(pages["lenet"])
    view.page.click("#tree-head button[data-key=params]")
    rows = view.rows()
    assert rows[:2] == ["", "net"] and rows[2:5] == ["net.7", "net.9", "net.3"]  # 48.1K, 10.2K, 2.4K params
    assert view.page.get_attribute("#tree-head button[data-key=params]", "aria-sort") == "descending"
    view.page.click("#tree-head button[data-key=params]")
    assert view.rows()[-1] == "net.7"
    view.page.click("#tree-head button[data-key=name]")
    assert view.rows()[2:5] == ["net.0", "net.1", "net.10"]


def test_keys_move_through_the_tree(pages, open_page):
    view = open_page(pages["lenet"])
    view.page.click("#tree-rows .row[data-name='net.3']")
    view.page.keyboard.press("ArrowDown")
    assert view.selected() == "net.4"
    view.page.keyboard.press("ArrowLeft")  # a leaf: to its parent
    assert view.selected() == "net"
    view.page.keyboard.press("ArrowLeft")  # open: closes it
    assert view.rows() == ["", "net"]
    view.page.keyboard.press("ArrowRight")
    assert len(view.rows()) == 14


def test_search_finds_by_name_or_type(pages, open_page):
    view = open_page(pages["lenet"])
    view.page.fill("#search", "linear")
    assert view.page.inner_text("#search-count") == "3 matches"
    view.page.press("#search", "Enter")
    assert view.selected() == "net.7"
    assert view.page.get_attribute("#tree-rows .row.sel", "data-name") == "net.7"
    assert "Linear" in view.page.inner_text("#details")


def test_resnet18_tree_collapses_and_expands(pages, open_page):
    view = open_page(pages["resnet18"])
    assert view.page.inner_text("#row-count").endswith(" of 68 modules shown")
    rows = view.rows()
    assert rows[:6] == ["", "conv1", "bn1", "relu", "maxpool", "layer1"]
    run = view.page.locator("#tree-rows .row[data-name='layer1.0']")
    assert run.locator(".run").inner_text().strip() == "×2" and "layer1.1" not in rows  # collapsed as in the terminal
    view.page.uncheck("#collapse")
    assert "layer1.1" in view.rows()
    view.page.click("#expand-all")
    assert view.page.inner_text("#row-count") == "68 of 68 modules shown"
    view.page.click("#collapse-all")
    assert view.rows() == ["", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    view.page.click("#tree-rows .row[data-name='layer2'] .toggle")
    assert view.rows()[7:9] == ["layer2.0", "layer2.1"]


def test_search_opens_a_collapsed_repeat(pages, open_page):
    view = open_page(pages["resnet18"])
    view.page.fill("#search", "layer1.1.conv2")
    view.page.click("#search-results li")
    assert view.selected() == "layer1.1.conv2"
    assert not view.page.is_checked("#collapse")  # the run was opened to show its second block
    assert view.page.get_attribute("#tree-rows .row.sel", "data-name") == "layer1.1.conv2"


def test_graph_and_tree_select_each_other(pages, open_page):
    view = open_page(pages["resnet18"])
    modules = _documents(pages["resnet18"].read_text())["modscope-summary"]["modules"]
    index = {m["name"]: i for i, m in enumerate(modules)}
    assert view.page.locator("#graph svg g.node").count() > 40  # the dataflow graph, inline
    view.page.click("#zoom-fit")
    view.page.locator(f"#graph g.node[data-m='{index['layer2.0.conv1']}']").first.click()
    assert view.selected() == "layer2.0.conv1"
    assert view.page.get_attribute("#tree-rows .row.sel", "data-name") == "layer2.0.conv1"
    view.page.click("#collapse-all")
    view.page.click("#tree-rows .row[data-name='layer3'] .toggle")
    view.page.click("#tree-rows .row[data-name='layer3.0'] .toggle")
    view.page.click("#tree-rows .row[data-name='layer3.0.bn1']")
    marked = view.page.eval_on_selector_all("#graph .ms-sel", "gs => gs.map(g => +g.dataset.m)")
    assert marked == [index["layer3.0.bn1"]]


def test_findings_link_to_their_module(pages, open_page):
    view = open_page(pages["hostile"])
    findings = view.page.locator("#findings li")
    assert findings.count() >= 3
    text = view.page.inner_text("#findings")
    assert "never_called" in text and "unused_parameter" in text and "grad_no_grad" in text
    view.page.locator("#findings a", has_text="unused").first.click()
    assert view.selected() == "unused"


def test_hostile_names_show_as_text_and_never_run(pages, open_page):
    view = open_page(pages["hostile"])
    assert view.dialogs == []  # no alert() ran
    assert view.rows() == ["", HOSTILE, "unused"]
    assert view.page.inner_text("#tree-rows .row:nth-child(2) .name") .strip() == HOSTILE
    assert view.page.evaluate("document.querySelectorAll('script').length") == 5
    assert view.page.evaluate("document.querySelectorAll('img').length") == 0
    view.page.fill("#search", "</script>")
    view.page.press("#search", "Enter")
    assert view.selected() == HOSTILE
    assert view.page.inner_text("#details h3") == HOSTILE
    view.page.click("#tree-rows .row:nth-child(1)")  # the root owns the hostile parameter
    assert HOSTILE_PARAM in view.page.inner_text("#details")
    assert view.page.locator("#graph svg text", has_text=HOSTILE).count() == 1


def test_page_renders_with_the_network_off(pages, open_page):
    view = open_page(pages["resnet18"], offline=True)
    assert len(view.rows()) > 10 and view.page.locator("#graph svg g.node").count() > 40
    assert {url.split(":", 1)[0] for url in view.requests} == {"file"}  # nothing but the page itself


def test_wide_model_paints_within_budget(pages, open_page):
    size = pages["wide"].stat().st_size
    assert size < 20 * 2**20  # ~9 MB (docs/benchmarks.md)
    view = open_page(pages["wide"])
    view.wait_until("performance.getEntriesByName('modscope-painted').length > 0")
    painted = view.page.evaluate("performance.getEntriesByName('modscope-painted')[0].startTime")
    assert painted < WIDE_PAINT_BUDGET_MS
    assert view.page.inner_text("#row-count") == "2 of 50002 modules shown"
    view.page.click("#tree-rows .row[data-name=blocks] .toggle")
    assert view.page.inner_text("#row-count") == "252 of 50002 modules shown"
    view.page.click("#expand-all")
    assert view.page.inner_text("#row-count") == "50002 of 50002 modules shown"
    assert len(view.rows()) < 200  # only the rows in view are in the document
    view.page.eval_on_selector("#tree-body", "b => { b.scrollTop = b.scrollHeight; }")
    view.wait_until("document.querySelector('#tree-rows .row:last-child').dataset.name === 'blocks.249.198'")
    view.page.fill("#search", "blocks.123.45")
    view.page.press("#search", "Enter")
    assert view.selected() == "blocks.123.45"


def test_diff_page_sorts_by_change_size(pages, open_page):
    view = open_page(pages["diff"])
    keys = lambda: view.page.eval_on_selector_all("#diff tbody tr", "rs => rs.map(r => r.children[1].textContent)")
    changes = view.page.eval_on_selector_all("#diff tbody tr", "rs => rs.map(r => r.children[0].textContent)")
    assert sorted(changes) == sorted(["only in A", "only in B", "dtype", "values", "values"])
    assert keys()[-2:] == ["big", "small"]  # value changes by rel. L2, largest first, after the structural ones
    view.page.click("#diff thead button[data-key=size]")
    assert keys()[:2] == ["small", "big"]
    view.page.fill("#diff-search", "sma")
    assert keys() == ["small"]


def test_bad_report_options_fail_in_one_line(pages):
    code, stdout, stderr = pages["missing_folder"]  # refused before anything is loaded
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and "does not exist" in stderr
    code, stdout, stderr = pages["grads_no_input"]
    assert code == 2 and stdout == "" and stderr == f"modscope: error: {NEEDS_INPUTS}\n"


def test_diff_html_writes_the_report_page(pages):
    code, _, stderr = pages["diff_html"]
    assert code == 1 and "wrote " in stderr  # different, as `diff` exits
    cli_page = pages["diff"].with_name("diff_cli.html").read_text()
    assert _documents(cli_page)["modscope-diff"] == _documents(pages["diff"].read_text())["modscope-diff"]


def test_script_json_is_safe_and_round_trips():
    data = {"name": HOSTILE + "\u2028&", "nan": float("nan"), "inf": float("-inf"), "n": [1, 2.5]}
    text = script_json(data)
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == {"name": HOSTILE + "\u2028&", "nan": "nan", "inf": "-inf", "n": [1, 2.5]}  # as --json


@pytest.mark.parametrize("bad", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><g/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><a xlink:href="https://x.example"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><g>',
])
def test_svg_check_refuses_what_graphviz_does_not_write(bad):
    from modscope.errors import RenderError
    from modscope.render.html_report.svg import check

    check('<svg xmlns="http://www.w3.org/2000/svg"><g id="msn-0" class="node"><title>&lt;/script&gt;</title></g></svg>')
    with pytest.raises(RenderError):
        check(bad)
