# vlm-playground: `make demo` serves the playground on tiny offline models (`make demo PORT=8123` on another
# port); `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Where the pinned torch wheels lie on disk (this workplace, CI) take them; elsewhere let pip choose
# (a CUDA build on a machine with a GPU).
LOCAL_TORCH := $(firstword $(wildcard /opt/pypi*/files/torch-2.14.1-* /opt/wheels/torch-2.14.1-*))
TORCH  := $(if $(LOCAL_TORCH),torch==2.14.1 torchvision==0.29.1,torch torchvision)
PYTEST_ARGS ?=
PORT   ?= 8000

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/vlm-playground demo --port $(PORT)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, the layering contracts of ../shared/DESIGN.md (import-linter), and the types (mypy)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) data .pytest_cache test-artifacts
