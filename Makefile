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

# Debian packages the tests and the demo use, installed only when one is missing (root with apt-get,
# as on CI): FFmpeg and GStreamer's tools (the senders of the live tests and the demo, the gst:
# sources of `live`), and the plugins and system-Python GStreamer/GLib bindings whose parsers check
# the DeepStream pipeline and configs (qtdemux: good, h264parse: bad; tests/deploy/test_deepstream.py).
SYSTEM_PACKAGES := ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad python3-gi gir1.2-gstreamer-1.0

.PHONY: install triton-env system-deps demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[train,export,openvino,triton,live,holoscan,dev]"
	touch $(STAMP)

install: $(STAMP)

$(TRITON_STAMP): Makefile
	test -x $(TRITON_ENV)/bin/python || $(PYTHON) -m venv $(TRITON_ENV)
	$(TRITON_ENV)/bin/python -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0"
	$(TRITON_ENV)/bin/python -m pip install --quiet "numpy>=1.24,<2" "onnxruntime>=1.17"
	touch $(TRITON_STAMP)

triton-env: $(TRITON_STAMP)

system-deps:
	@if command -v ffmpeg >/dev/null && command -v gst-launch-1.0 >/dev/null \
	    && gst-inspect-1.0 videotestsrc >/dev/null 2>&1 && gst-inspect-1.0 y4menc >/dev/null 2>&1 \
	    && gst-inspect-1.0 qtdemux >/dev/null 2>&1 && gst-inspect-1.0 h264parse >/dev/null 2>&1 \
	    && /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0')" >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(SYSTEM_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(SYSTEM_PACKAGES) >/dev/null; \
	else \
	    echo "Error: the tests need FFmpeg and GStreamer: install $(SYSTEM_PACKAGES) (Debian/Ubuntu names)"; \
	    exit 1; \
	fi

test: $(STAMP) $(TRITON_STAMP) system-deps
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check convseg_deploy exporters benchmarks tests

demo: $(STAMP) system-deps
	bash benchmarks/demo.sh $(DEMO)

clean:
	rm -rf $(DEMO)
