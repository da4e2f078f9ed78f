# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install
# what they need when it is missing (the stamp is refreshed when setup.cfg changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo
# The real tritonserver (nvidia-pytriton wheel) runs from an environment of its own: its Python
# backend stub needs numpy<2, the project's venv has numpy 2 (see benchmarks/triton_local.py).
TRITON_ENV := .venv-triton
TRITON_STAMP := $(TRITON_ENV)/.installed

.PHONY: install triton-env demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[train,export,openvino,triton,dev]"
	touch $(STAMP)

install: $(STAMP)

$(TRITON_STAMP): Makefile
	test -x $(TRITON_ENV)/bin/python || $(PYTHON) -m venv $(TRITON_ENV)
	$(TRITON_ENV)/bin/python -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0"
	$(TRITON_ENV)/bin/python -m pip install --quiet "numpy>=1.24,<2" "onnxruntime>=1.17"
	touch $(TRITON_STAMP)

triton-env: $(TRITON_STAMP)

test: $(STAMP) $(TRITON_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check convseg_deploy exporters benchmarks tests

demo: $(STAMP)
	bash benchmarks/demo.sh $(DEMO)

clean:
	rm -rf $(DEMO)
