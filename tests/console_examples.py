"""Console examples in README.md and docs/*.md: found, run, compared with what the page shows, rewritten.

An example is a fenced block whose first line starts with ``$ ``: each ``$ COMMAND`` line is followed by
the output the page shows for it (possibly none). A block with any shown output is run, all its commands
in order, by ``bash`` in a fresh folder holding links to the repository's top-level entries (so
``examples/lenet.py`` resolves and files it writes land in the folder), with this venv's ``bin`` first on
PATH, ``COLUMNS=80`` (what a pipe gets) and ``NO_COLOR=1``; stdout and stderr are read together, as a
terminal shows them.

Shown and real output are compared after normalising only what must vary: trailing spaces, memory
addresses (``0x7f...``), durations (``12.3 ms``) and the run's folder. In the shown text, a line that is
just ``...`` stands for any number of lines, and ``...`` inside a line for any text on that line: write
that where a value differs from run to run (the CLI seeds its inputs, but a model's random initial weights
are drawn afresh by every process, so a loss value or a data-dependent loop count is not fixed).

An HTML comment on the line above a block changes how it is treated (the reason is for readers):

- ``<!-- console: skip REASON -->``: never run (needs a cluster, a download, ...);
- ``<!-- console: slow REASON -->``: run only with ``MODSCOPE_DOCS_SLOW=1`` (a big model, many seconds);
- ``<!-- console: gpu REASON -->``: run only where CUDA is available.

``MODSCOPE_UPDATE_DOCS=1 pytest tests/test_docs_examples.py`` rewrites the shown output of every example
that differs with the real one, keeping the lines before the first and after the last ``...`` line.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*console:\s*(skip|slow|gpu)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```")
ELIDED = "..."


@dataclass
class Step:
    command: str
    shown: list[str]  # the output lines the page shows, as written (without the block's indentation)
    gap: int = 0  # blank lines after them, before the next command


@dataclass
class Example:
    page: Path
    line: int  # 1-based line of the opening fence
    indent: str
    opening: str  # the opening fence line as written
    steps: list[Step]
    marker: str | None = None  # skip / slow / gpu
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def shows_output(self) -> bool:
        return any(step.shown for step in self.steps)

    def text(self) -> str:
        """The block as it stands in the page (fences included)."""
        body = []
        for step in self.steps:
            body.append(f"$ {step.command}")
            body.extend(step.shown + [""] * step.gap)
        closing = f"{self.indent}```"
        return "\n".join([self.opening, *(f"{self.indent}{line}".rstrip() if line else "" for line in body), closing])


def examples(pages=PAGES) -> list[Example]:
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            match = FENCE.match(lines[i])
            if not match:
                i += 1
                continue
            indent, start = match.group(1), i
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
            i = end + 1
            if not body or not body[0].startswith("$ "):
                continue
            steps: list[Step] = []
            for line in body:
                if line.startswith("$ "):
                    steps.append(Step(line[2:], []))
                else:
                    steps[-1].shown.append(line)
            for step in steps:  # blank lines before the next command are layout, not output
                while step.shown and not step.shown[-1].strip():
                    step.shown.pop()
                    step.gap += 1
            above = MARKER.match(lines[start - 1]) if start else None
            found.append(Example(page, start + 1, indent, lines[start], steps,
                                 above.group(1) if above else None, above.group(2) if above else ""))
    return found


def run(example: Example, folder: Path) -> list[str]:
    """Run every command of ``example`` in ``folder``; the output of each, as lines."""
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".venv") and not (folder / entry.name).exists():
            (folder / entry.name).symlink_to(entry)
    env = dict(os.environ, COLUMNS="80", NO_COLOR="1", TERM="dumb",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("FORCE_COLOR", None)
    outputs = []
    for step in example.steps:
        done = subprocess.run(["bash", "-c", step.command], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        outputs.append(done.stdout)
    return outputs


def normalised(text: str, folder: Path | None = None) -> str:
    if folder is not None:
        for path in {str(folder.resolve()), str(folder)}:
            text = text.replace(path + "/", "").replace(path, ".")
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", text)
    text = re.sub(r"\b\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s)\b", "<time>", text)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def matches(shown: list[str], real: str) -> bool:
    """Whether the real output (normalised) is what the page shows, with ``...`` elisions."""
    pattern = []
    for line in normalised("\n".join(shown)).splitlines():
        if line.strip() == ELIDED:
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append("[^\n]*?".join(re.escape(part) for part in line.split(ELIDED)) + r"\n")
    target = real + "\n" if real else ""
    return re.fullmatch("".join(pattern), target) is not None


def rewritten(shown: list[str], real: str) -> list[str]:
    """The real output for the page, keeping the shown head and tail around ``...`` lines, and shown lines
    with ``...`` inside them where they still match a real line (values that vary from run to run)."""
    lines = [_kept(line, shown) for line in real.splitlines()]
    cuts = [i for i, line in enumerate(shown) if line.strip() == ELIDED]
    if not cuts:
        return lines
    head, tail = cuts[0], len(shown) - cuts[-1] - 1
    if head + tail >= len(lines):
        return lines
    return lines[:head] + [shown[cuts[0]]] + (lines[len(lines) - tail:] if tail else [])


def _kept(line: str, shown: list[str]) -> str:
    for candidate in shown:
        if ELIDED in candidate and candidate.strip() != ELIDED and matches([candidate], line):
            return candidate
    return line


def update(example: Example, reals: list[str]) -> bool:
    """Write the real outputs into the page in place of the shown ones; True when the page changed."""
    before = example.text()
    for step, real in zip(example.steps, reals):
        if step.shown and not matches(step.shown, real):
            step.shown = rewritten(step.shown, real)
    after = example.text()
    if after == before:
        return False
    text = example.page.read_text()
    assert before in text, f"{example.id}: the block changed on disk while the test ran"
    example.page.write_text(text.replace(before, after, 1))
    return True
