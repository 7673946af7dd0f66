# Two entry points for a fresh machine (python3, make, root):
#   make demo   - create .venv, install modscope, run it on the bundled examples
#   make test   - create .venv, install modscope + test deps + Graphviz, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv dot demo test bench clean

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

demo: venv dot
	$(BIN)/python -m examples.demo

test: venv dot
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info
