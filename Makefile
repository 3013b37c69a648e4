# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: demo test test-fast lint-imports bench setup clean

demo: $(VENV)/.runtime
	$(BIN)/resnet-tf demo

# lint-imports: the import-linter contracts of pyproject.toml (imports flow
# apps -> localization -> detection -> resnet_tf); an upward import fails here.
# The suite runs in TEST_WORKERS pytest-xdist processes, a test file to each
# (--dist loadfile: a file's module fixtures are made once); TEST_WORKERS=0
# runs it in this one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(VENV)/.dev
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest tests -ra --durations=60 $(XDIST)

test-fast: $(VENV)/.dev
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest tests -ra -m "not slow" $(XDIST)

lint-imports: $(VENV)/.dev
	$(BIN)/lint-imports --no-cache

# The peers (torch, tf-keras) are in the dev requirements: the weight-import
# tests write their file formats.
bench: $(VENV)/.dev
	$(BIN)/python benchmarks/train_throughput.py

setup: $(VENV)/.dev

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-nodeps.txt
	$(PIP) -r requirements-dev.txt
	$(PIP) --no-deps -r requirements-nodeps.txt
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
