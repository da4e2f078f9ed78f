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

# GStreamer's own parsers check the DeepStream pipeline and configs (tests/deploy/test_deepstream.py):
# gst-launch-1.0, the plugins of the pipeline's standard elements (qtdemux: good, h264parse: bad) and
# the system Python's GStreamer/GLib bindings. Debian packages, installed only when missing (as root).
GST_DEBS := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	python3-gi gir1.2-gstreamer-1.0

.PHONY: install triton-env system-deps demo test lint clean

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

system-deps:
	@if ! command -v gst-launch-1.0 >/dev/null 2>&1 || ! gst-inspect-1.0 qtdemux >/dev/null 2>&1 \
	    || ! gst-inspect-1.0 h264parse >/dev/null 2>&1 \
	    || ! /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0')" >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(GST_DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(GST_DEBS); \
	  else \
	    echo "GStreamer is missing, so its tests will be skipped: sudo apt-get install $(GST_DEBS)"; \
	  fi; \
	fi

test: $(STAMP) $(TRITON_STAMP) system-deps
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check convseg_deploy exporters benchmarks tests

demo: $(STAMP)
	bash benchmarks/demo.sh $(DEMO)

clean:
	rm -rf $(DEMO)
