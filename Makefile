# gfx906-llm: `make serve` runs the server on the SmolLM2 demo model, `make test` runs the tests.
# Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel by default; on a ROCm/CUDA host install that build of torch into the venv first.
TORCH_SPEC ?= torch==2.13.0
MODEL ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install serve test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/gfx906-llm serve $(MODEL) $(ARGS)

test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
