# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install
# what they need when it is missing (the stamp is refreshed when setup.cfg changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: install demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[train,export,openvino,dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check convseg_deploy exporters benchmarks tests

demo: $(STAMP)
	bash benchmarks/demo.sh $(DEMO)

clean:
	rm -rf $(DEMO)
