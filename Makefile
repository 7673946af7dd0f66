# Two entry points for a fresh machine (python3, make, root):
#   make demo   - create .venv, install modscope, run it on the bundled examples
#   make test   - create .venv, install modscope + test deps + Graphviz, jq and Chromium, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv dot jq chromium demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Graphviz's `dot` renders graphs; install it from the OS packages when missing.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz >/dev/null; }
	@dot -V

# jq runs the README's `--json | jq` examples, which tests/test_docs_examples.py runs as printed.
jq:
	@command -v jq >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq jq >/dev/null; }

# The HTML report's tests drive the OS's Chromium through Playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

demo: venv dot
	$(BIN)/python -m examples.demo

# `make test` spreads whole test files over pytest-xdist workers (a file's module fixtures are built once):
# one worker per core, at most 4 (the fuzz, distributed and CLI tests start processes of their own).
# On one core, and with `make test JOBS=0`, everything runs in one process.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; [ $$n -lt 2 ] && n=0; echo $$n)

test: venv dot jq chromium
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

bench: venv
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
