# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install
# what they need when it is missing. The install is redone when anything that decides it changes:
# setup.cfg, pyproject.toml, this Makefile (the extras are listed here), or the Python (a venv of
# another Python is made anew: the stamp's name carries the interpreter's version).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
STAMP := $(VENV)/.installed-python$(PY_VERSION)
# The test and demo venv: NVIDIA's ONNX Runtime build ([gpu]) so that the CUDA-provider paths are
# tested where they load; a clinic PC installs [cpu] instead (docs/install.md).
EXTRAS := gpu,train,export,openvino,triton,live,holoscan,dev
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

.PHONY: install triton-env system-deps demo test test-weakest-isa lint clean

$(STAMP): setup.cfg pyproject.toml Makefile
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" != "$(PY_VERSION)" ]; then \
	    echo "$(VENV) was made by another Python: making it anew with $(PYTHON) $(PY_VERSION)"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --upgrade -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed $(VENV)/.installed-python*
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

# CONVSEG_TEST_REQUIRE: what this target installs, so that a test which would skip for lack of one
# of them fails the run instead (tests/conftest.py).
REQUIRED := CONVSEG_TEST_REQUIRE=tritonserver,openvino,ffmpeg,gstreamer SETUPTOOLS_USE_DISTUTILS=stdlib
# The tests whose outcome depends on the CPU (marker cpu_dependent) run once more as on the
# weakest CPU of these machines, an AVX2-only EPYC: oneDNN's kernels (PyTorch's and OpenVINO's CPU
# plugin's) capped at AVX2, PyTorch's own kernels at AVX2, and our CPU probe reporting AVX2 only.
# ONNX Runtime has no such switch (MLAS follows CPUID). docs/cpus.md says what takes effect.
WEAKEST_ISA := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 CONVSEG_MAX_CPU_ISA=AVX2

test: $(STAMP) $(TRITON_STAMP) system-deps
	$(REQUIRED) $(BIN)/python -m pytest -q
	$(REQUIRED) $(WEAKEST_ISA) $(BIN)/python -m pytest -q -m cpu_dependent

test-weakest-isa: $(STAMP)
	$(WEAKEST_ISA) $(BIN)/python -m pytest -q -m cpu_dependent

lint: $(STAMP)
	$(BIN)/ruff check convseg_deploy exporters benchmarks tests

demo: $(STAMP) system-deps
	bash benchmarks/demo.sh $(DEMO)

clean:
	rm -rf $(DEMO)
