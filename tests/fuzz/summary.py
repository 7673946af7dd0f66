"""Print a saved fuzz report (MODSCOPE_FUZZ_REPORT) by check: ``python -m tests.fuzz.summary runs.json``."""
from __future__ import annotations

import collections
import json
import sys

from tests.fuzz.checks import CHECKS


def main(path: str) -> None:
    with open(path) as f:
        report = json.load(f)
    runs = report["runs"]
    phases = ", ".join(f"{k[:-2]} {report[k]:.0f} s" for k in ("build_s", "matrix_s", "process_s") if k in report)
    figures = f"{report['cases']} cases, {len(report['commands'])} commands, {len(runs)} runs"
    print(f"{figures}, {report['wall_s']:.0f} s ({phases})")
    failing = [r for r in runs if r["problems"]]
    print(f"{len(runs) - len(failing)} runs passed every check; {len(failing)} failed one or more")
    for key, title in CHECKS.items():
        bad = [r for r in runs if key in r["problems"]]
        cases = collections.Counter(r["case"] for r in bad)
        print(f"\n{key}: {title}: {len(bad)} run(s), {len(cases)} case(s)")
        for r in bad:
            print(f"  {r['line']}")
    print("\nby case: command=exit (h hang, sN signal N) [problems], first stderr line of one of them")
    by_case = collections.defaultdict(list)
    for r in failing:
        by_case[r["case"]].append(r)
    for case, bad in sorted(by_case.items()):
        ends = " ".join(f"{r['command']}{'[p]' if r['mode'] == 'process' else ''}={_end(r)}" for r in bad)
        problems = sorted({p for r in bad for p in r["problems"]})
        line = next((r["stderr"].strip().splitlines()[0] for r in bad if r["stderr"].strip()), "")
        print(f"  {case}: {ends} {problems} {line[:160]!r}")


def _end(run: dict) -> str:
    if run["timed_out"]:
        return "h"
    return f"s{run['signal']}" if run["signal"] else str(run["code"])


if __name__ == "__main__":
    main(sys.argv[1])
