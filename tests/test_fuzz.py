"""The fuzz suite: hostile and broken checkpoints of every format through every reading command.

Asserts, over every run: no payload ran, no traceback, no crash, no hang, exit 0/1 for valid files and
exit 2 with exactly one ``modscope: error:`` line for broken or hostile ones, JSON that parses, bounded
peak memory for small files, no bytecode next to the user's files. ``MODSCOPE_FUZZ=full`` runs the larger
matrix; ``MODSCOPE_FUZZ_REPORT=file.json`` saves every run. See docs/security.md for the figures.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.fuzz import commands as cmds
from tests.fuzz import harness, pickles
from tests.fuzz.cases import VALID, build_cases, model_target
from tests.fuzz.torch_files import net_state, torchscript_payload

FULL = os.environ.get("MODSCOPE_FUZZ", "") == "full"
WORKERS = int(os.environ.get("MODSCOPE_FUZZ_WORKERS", "2"))
TIMEOUT_S = float(os.environ.get("MODSCOPE_FUZZ_TIMEOUT", "10"))
RSS_LIMIT_KIB = 256 << 10  # peak memory a small file may add over the warm baseline
SHOWN = 80

#: (case, command) pairs also run as their own ``python -m modscope`` process (the real entry point).
PROCESS_RUNS = [
    ("torch/valid", "summary"), ("torch/valid", "weights"), ("torch/rewrite-stored", "diff-ref"),
    ("torch/big-endian", "summary"), ("torch/zip-bomb", "summary"), ("torch/huge-numel", "weights"),
    ("payload/zip-os.system", "summary"), ("payload/legacy-builtins.exec", "diff-ref"),
    ("torchscript/payload", "summary"), ("torchscript/payload", "audit"), ("special/fifo.pt", "summary"),
    ("special/fifo-folder", "summary"), ("dcp/dotdot", "diff-ref"), ("index/symlink-out", "diff-ref"),
    ("safetensors/deep-nesting", "summary"), ("safetensors/long-dotted-name", "summary"),
]  # fmt: skip


class Results:
    def __init__(self, root, cases, runs, process_runs, process_peaks, wall_s):
        self.root, self.cases, self.runs, self.wall_s = root, {c.name: c for c in cases}, runs, wall_s
        self.process_runs, self.process_peaks = process_runs, process_peaks

    def all_runs(self):
        return self.runs + self.process_runs


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    start = time.perf_counter()
    root = tmp_path_factory.mktemp("fuzz")
    cases = build_cases(root, full=FULL)
    model = model_target(root)
    commands = cmds.FULL if FULL else cmds.DEFAULT
    ref = str(root / "cases" / "torch" / "valid.pt")
    warmup = [["summary", ref], ["diff", ref, ref], ["check", model, "--weights", ref], ["summary", model, "--weights", ref]]
    runs = harness.run_matrix(cases, commands, model, workers=WORKERS, timeout=TIMEOUT_S, warmup=warmup)
    by_name = {c.name: c for c in cases}
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(
            lambda pair: harness.run_process(by_name[pair[0]], pair[1], cmds.FULL[pair[1]], model, 3 * TIMEOUT_S),
            PROCESS_RUNS,
        ))  # fmt: skip
    results = Results(root, cases, runs, [r for r, _ in done], [p for _, p in done], time.perf_counter() - start)
    report = os.environ.get("MODSCOPE_FUZZ_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"wall_s": results.wall_s, "cases": len(cases), "commands": list(commands),
                       "runs": harness.as_records(results.all_runs())}, f, indent=1)  # fmt: skip
    return results


def _fail(title: str, bad: list) -> None:
    __tracebackhide__ = True
    if bad:
        lines = [r.describe() if isinstance(r, harness.Run) else str(r) for r in bad]
        more = f"\n... and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
        pytest.fail(f"{title}: {len(bad)} run(s)\n" + "\n".join(lines[:SHOWN]) + more, pytrace=False)


# --- the generator is what it claims ----------------------------------------------------------------------


def test_crafted_files_are_read_back_by_torch_itself(fuzz):
    """Valid generated files really are valid: torch.load reads them back equal to the reference state."""
    state = net_state()
    for name, case in fuzz.cases.items():
        if case.kind == VALID and case.path.endswith(".pt") and not name.startswith(("safetensors", "nested")):
            loaded = torch.load(case.path, weights_only=True)
            assert loaded.keys() == state.keys(), name
            assert all(torch.equal(loaded[k], state[k]) for k in state), name


def test_payloads_are_live(tmp_path):
    """Every payload creates its marker when unpickled the unsafe way, so "no marker" can fail."""
    for kind, payload in pickles.payloads(str(tmp_path / "m")).items():
        assert pickles.marker_works(payload, str(tmp_path / "m")), kind
    marker = tmp_path / "ts"
    archive = torchscript_payload(tmp_path / "ts.pt", str(marker))
    assert not marker.exists()
    torch.jit.load(str(archive))
    assert marker.exists()


# --- what every run must show ------------------------------------------------------------------------------


def test_no_payload_ran(fuzz):
    _fail("a payload created its marker file", [r for r in fuzz.all_runs() if r.marker])
    assert not any((fuzz.root / "markers").iterdir()), "a marker appeared outside any attributed run"


def test_no_traceback(fuzz):
    _fail("a traceback on stderr", [r for r in fuzz.all_runs() if "Traceback" in r.stderr])


def test_no_crash(fuzz):
    _fail("the process died of a signal", [r for r in fuzz.all_runs() if r.signal])


def test_no_hang(fuzz):
    _fail(f"ran past {TIMEOUT_S:g} s (x3 for processes)", [r for r in fuzz.all_runs() if r.timed_out])


def test_exit_codes(fuzz):
    """Valid files exit 0/1 as their content says; broken and hostile ones exit 2; never 3."""
    bad = []
    for run in fuzz.all_runs():
        if run.timed_out or run.signal:
            continue  # reported above
        allowed = cmds.allowed(run.command, fuzz.cases[run.case])
        if run.code not in allowed:
            bad.append(f"{run.describe()} (allowed {sorted(allowed)})")
    _fail("unexpected exit code", bad)


def test_errors_are_one_line(fuzz):
    """Exit 2 comes with exactly one stderr line, and it starts with ``modscope: error:``."""
    bad = []
    for run in fuzz.all_runs():
        lines = run.stderr.strip().splitlines()
        if run.code == 2 and (len(lines) != 1 or not lines[0].startswith("modscope: error:")):
            bad.append(f"{run.describe()} ({len(lines)} lines)")
    _fail("exit 2 without exactly one 'modscope: error:' line", bad)


def test_json_output_parses(fuzz):
    bad = []
    for run in fuzz.all_runs():
        if cmds.is_json(run.command) and run.code in (0, 1):
            try:
                json.loads(run.stdout)
            except ValueError as exc:
                bad.append(f"{run.describe()} ({exc})")
    _fail("--json printed something that is not one JSON document", bad)


def test_peak_memory_is_bounded_for_small_files(fuzz):
    limit = RSS_LIMIT_KIB
    bad = [f"{r.describe()} (+{r.rss_excess_kib >> 10} MiB)" for r in fuzz.runs if (r.rss_excess_kib or 0) > limit]
    base = min(p for r, p in zip(fuzz.process_runs, fuzz.process_peaks) if r.case == "torch/valid")
    for run, peak in zip(fuzz.process_runs, fuzz.process_peaks):
        if fuzz.cases[run.case].bounded and peak - base > limit:
            bad.append(f"{run.describe()} (peak {peak >> 10} MiB, valid file: {base >> 10} MiB)")
    _fail(f"peak RSS more than {limit >> 10} MiB above a valid file's", bad)


def test_no_bytecode_next_to_user_files(fuzz):
    written = sorted(str(p) for p in fuzz.root.rglob("__pycache__"))
    assert not written, f"bytecode written beside the user's files: {written}"


def test_every_case_ran_through_every_command(fuzz):
    commands = cmds.FULL if FULL else cmds.DEFAULT
    assert sorted((r.case, r.command) for r in fuzz.runs) == sorted((c, k) for c in fuzz.cases for k in commands)
