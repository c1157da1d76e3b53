# Set-up and the two README commands. `make demo` and `make test` do all set-up on a fresh machine:
# a virtual environment in .venv, torch first (TORCH; from TORCH_INDEX when given, e.g. the CPU
# wheel index on a Linux machine whose pip would otherwise fetch the multi-GB CUDA build), then
# the project with its training and test extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup demo test test-slow docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/esper-demo

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache site
