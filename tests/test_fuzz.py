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
from tests.fuzz import checks, harness, pickles
from tests.fuzz.cases import VALID, build_cases, model_target
from tests.fuzz.torch_files import net_state, torchscript_payload

FULL = os.environ.get("MODSCOPE_FUZZ", "") == "full"
WORKERS = int(os.environ.get("MODSCOPE_FUZZ_WORKERS", "2"))
TIMEOUT_S = float(os.environ.get("MODSCOPE_FUZZ_TIMEOUT", "10"))
SHOWN = 80

#: (case, command) pairs also run as their own ``python -m modscope`` process (the real entry point).
PROCESS_RUNS = [
    ("torch/valid", "summary"), ("torch/big-endian", "summary"), ("torch/zip-bomb", "summary"),
    ("payload/zip-os.system", "summary"), ("torchscript/payload", "audit"), ("special/fifo.pt", "summary"),
    ("dcp/dotdot", "diff-ref"), ("safetensors/long-dotted-name", "summary"),
]  # fmt: skip


class Results:
    """The cases, every run, and the problems each run shows (tests.fuzz.checks)."""

    def __init__(self, root, cases, runs, processes, wall_s):
        self.root, self.cases, self.wall_s, self.phases = root, {c.name: c for c in cases}, wall_s, {}
        base = min((peak for run, peak in processes if run.case == "torch/valid"), default=None)
        self.found = [(run, checks.problems(run, self.cases[run.case])) for run in runs]
        self.found += [(run, checks.problems(run, self.cases[run.case], base, peak)) for run, peak in processes]

    def failing(self, key: str) -> list[str]:
        return [checks.explain(run, self.cases[run.case], key) for run, found in self.found if key in found]

    def save(self, path: str, commands) -> None:
        records = [harness.as_record(run) | {"problems": found, "line": run.describe()} for run, found in self.found]
        with open(path, "w") as f:
            json.dump({"wall_s": self.wall_s, **self.phases, "cases": len(self.cases), "commands": list(commands),
                       "runs": records}, f)  # fmt: skip


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    start = time.perf_counter()
    root = tmp_path_factory.mktemp("fuzz")
    cases = build_cases(root, full=FULL)
    phases = {"build_s": time.perf_counter() - start}
    model = model_target(root)
    commands = cmds.FULL if FULL else cmds.DEFAULT
    ref = str(root / "cases" / "torch" / "valid.pt")
    warmup = [["summary", ref], ["diff", ref, ref], ["check", model, "--weights", ref]]
    warmup += [["summary", model, "--weights", ref], ["summary", str(root / "cases" / "dcp" / "valid")]]
    if FULL:
        warmup.append(["nan", model, "--weights", ref, "--input", "2,4"])  # imports sympy (FLOP formulas)
    runs = harness.run_matrix(cases, commands, model, workers=WORKERS, timeout=TIMEOUT_S, warmup=warmup)
    phases["matrix_s"] = time.perf_counter() - start - phases["build_s"]
    by_name = {c.name: c for c in cases}
    with ThreadPoolExecutor(WORKERS) as pool:
        processes = list(pool.map(
            lambda pair: harness.run_process(by_name[pair[0]], pair[1], cmds.FULL[pair[1]], model, 3 * TIMEOUT_S),
            PROCESS_RUNS,
        ))  # fmt: skip
    phases["process_s"] = time.perf_counter() - start - phases["build_s"] - phases["matrix_s"]
    results = Results(root, cases, runs, processes, time.perf_counter() - start)
    results.phases = phases
    if os.environ.get("MODSCOPE_FUZZ_REPORT"):
        results.save(os.environ["MODSCOPE_FUZZ_REPORT"], commands)
    return results


def _fail(key: str, fuzz) -> None:
    __tracebackhide__ = True
    lines = fuzz.failing(key)
    if lines:
        more = f"\n... and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
        pytest.fail(f"{checks.CHECKS[key]}: {len(lines)} run(s)\n" + "\n".join(lines[:SHOWN]) + more, pytrace=False)


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
    _fail("payload", fuzz)
    assert not any((fuzz.root / "markers").iterdir()), "a marker appeared outside any attributed run"


def test_no_traceback(fuzz):
    _fail("traceback", fuzz)


def test_no_crash(fuzz):
    _fail("crash", fuzz)


def test_no_hang(fuzz):
    _fail("hang", fuzz)


def test_exit_codes(fuzz):
    """Valid files exit 0/1 as their content says; broken and hostile ones exit 2; never 3."""
    _fail("exit", fuzz)


def test_errors_are_one_line(fuzz):
    """Exit 2 comes with exactly one stderr line, and it starts with ``modscope: error:``."""
    _fail("lines", fuzz)


def test_json_output_parses(fuzz):
    _fail("json", fuzz)


def test_peak_memory_is_bounded_for_small_files(fuzz):
    """A small file adds at most checks.RSS_LIMIT_KIB to a run's peak (a process: over a valid file's)."""
    _fail("rss", fuzz)


def test_no_bytecode_next_to_user_files(fuzz):
    written = sorted(str(p) for p in fuzz.root.rglob("__pycache__"))
    assert not written, f"bytecode written beside the user's files: {written}"


def test_every_case_ran_through_every_command(fuzz):
    commands = cmds.FULL if FULL else cmds.DEFAULT
    ran = sorted((r.case, r.command) for r, _ in fuzz.found if r.mode == "worker")
    assert ran == sorted((c, k) for c in fuzz.cases for k in commands)
