# The README's commands. Each one creates or reuses the virtual environment, installs torch and the other
# dependencies, builds pyseq against that torch (--no-build-isolation) and runs.
#
#   make test    the test suite
#   make bench   the benchmark table (pyseq vs torch, same process, same threads), its JSON report and charts in
#                build/bench/ (RECORD=1: benchmarks/results.json and benchmarks/charts/, the recorded reference)
#   make wheel   a manylinux wheel for the installed torch, in dist/ (make wheel-check: tested from a fresh venv)
#
# TORCH_SPEC pins the torch that gets installed (2.13.0: the CPU build this project develops against); set it empty
# to keep a torch that is already there (make gpu-check does, on machines that come with a CUDA torch).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYSEQ_CUDA ?= auto
PYSEQ_CUDA_ARCHITECTURES ?= 90
export PYSEQ_CUDA PYSEQ_CUDA_ARCHITECTURES
DEV_REQUIREMENTS ?= requirements-dev.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pyseq-deps
BENCH_STAMP := $(VENV)/.pyseq-bench-deps

.PHONY: all build test test-slow sanitize cuda-variant cuda-emulate wheel wheel-check bench bench-pytest gpu-check clean

all: test

$(STAMP): $(DEV_REQUIREMENTS) requirements-build.txt
	@echo "==> Installing $(or $(TORCH_SPEC),the present torch) and the build and test requirements into $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -r $(DEV_REQUIREMENTS)
	touch $@

$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

# The build shows its progress (CMake's checks, one line per compiled file) and keeps pip's whole output in
# build/build.log, whose end it prints when the build fails.
build: SHELL := /bin/bash
build: $(STAMP)
	@echo "==> Building pyseq's extension (a few minutes on 2 cores the first time; full log in build/build.log)"
	@mkdir -p build
	@$(PY) -m pip install --no-build-isolation -v . 2>&1 | tee build/build.log | \
	  grep --line-buffered -E '^ *(\*\*\* |-- pyseq|\[[0-9]+/[0-9]+\] |Successfully installed)'; \
	  status=$${PIPESTATUS[0]}; if [ $$status != 0 ]; then tail -n 60 build/build.log; fi; exit $$status

test: build
	$(VENV)/bin/pytest -q

test-slow: build
	$(VENV)/bin/pytest -q -m slow
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q tests/test_fuzz.py

# $(call staged_build,DIR,CMAKE OPTIONS): builds the extension apart from the normal build, in DIR, and stages it
# beside a copy of the Python package in DIR/stage, which tests then import through PYTHONPATH (subprocesses too).
define staged_build
	cmake -S . -B $(1) -G Ninja -DCMAKE_MAKE_PROGRAM=$(CURDIR)/$(VENV)/bin/ninja -DPython_EXECUTABLE=$(CURDIR)/$(PY) $(2)
	cmake --build $(1)
	rm -rf $(1)/stage && mkdir -p $(1)/stage
	cp -r pyseq $(1)/stage/ && cp $(1)/_C*.so $(1)/stage/pyseq/
endef

# The test suite against a build with AddressSanitizer + UndefinedBehaviorSanitizer. The interpreter is not
# instrumented, so the sanitizer runtimes are preloaded. Leak checking is off (the interpreter and torch keep their
# allocations to the end).
SANITIZE_DIR := build/sanitize
SANITIZE_LIBS = $$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)
sanitize: $(STAMP)
	$(call staged_build,$(SANITIZE_DIR),-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYSEQ_SANITIZE=ON -DPYSEQ_CUDA=off -DPYSEQ_CUDA_CHECK=OFF)
	PYSEQ_SANITIZE=1 PYTHONPATH=$(CURDIR)/$(SANITIZE_DIR)/stage LD_PRELOAD="$(SANITIZE_LIBS)" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:verify_asan_link_order=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(VENV)/bin/pytest -q -p no:cacheprovider

# The CUDA-enabled variant, built against whatever torch is installed (the CPU one here: the CUDA sources need only
# the CUDA runtime and device-generic ATen), loaded, and run through the test suite (CUDA tests skip without a GPU).
CUDA_DIR := build/cuda
cuda-variant: $(STAMP)
	$(call staged_build,$(CUDA_DIR),-DCMAKE_BUILD_TYPE=Release -DPYSEQ_CUDA=on -DPYSEQ_CUDA_ARCHITECTURES=$(PYSEQ_CUDA_ARCHITECTURES))
	cd $(CUDA_DIR) && PYTHONPATH=$(CURDIR)/$(CUDA_DIR)/stage $(CURDIR)/$(PY) -c "import json, pyseq; info = pyseq.build_info(); \
		print(json.dumps(info)); assert info['cuda'] and info['cuda_runtime'] > 0, info"
	PYTHONPATH=$(CURDIR)/$(CUDA_DIR)/stage $(VENV)/bin/pytest -q -p no:cacheprovider

# Every CUDA kernel run on the CPU: the extension built with the CUDA glue and kernels compiled as C++ against the
# CUDA emulator (csrc/common/cuda_emulation; each GPU thread a fiber), then the emulator's own tests and the tests
# that run the glue and kernels against the CPU ops under several thread schedules (tests/test_cuda_emulation.py,
# and the family tests whose `device` fixture gets an "emulated" device in this build).
EMULATE_DIR := build/cuda-emulate
cuda-emulate: $(STAMP)
	$(call staged_build,$(EMULATE_DIR),-DCMAKE_BUILD_TYPE=Release -DPYSEQ_CUDA=off -DPYSEQ_CUDA_CHECK=OFF -DPYSEQ_CUDA_EMULATION=ON)
	PYTHONPATH=$(CURDIR)/$(EMULATE_DIR)/stage PYSEQ_EMULATOR_SELFTEST_DIR=$(CURDIR)/$(EMULATE_DIR) \
		$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow" -k "emulat" tests

# A manylinux wheel for the installed torch, pinned to its release (tools/make_wheel.py), in dist/.
WHEEL_STAMP := $(VENV)/.pyseq-wheel-deps
$(WHEEL_STAMP): requirements-wheel.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-wheel.txt
	touch $@

wheel: $(WHEEL_STAMP)
	$(PY) tools/make_wheel.py dist

# The wheel installed into a fresh environment that has only torch (and the test references), and the test suite
# run from outside the source tree against it.
WHEEL_VENV := build/wheel-venv
wheel-check: wheel
	rm -rf $(WHEEL_VENV) && $(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(WHEEL_VENV)/bin/python -m pip install -q dist/pyseq-*.whl pytest pytorch-crf hypothesis espeakng-loader matplotlib \
		onnx onnxscript onnxruntime "numpy<2"
	cd $(WHEEL_VENV) && bin/python -c "import json, pyseq; assert '/wheel-venv/' in pyseq.__file__, pyseq.__file__; \
		print(json.dumps(pyseq.build_info()))"
	cd $(WHEEL_VENV) && bin/pytest -q -p no:cacheprovider --rootdir=$(CURDIR) $(CURDIR)/tests

# make bench writes its report and charts under build/bench/, untracked; make bench RECORD=1 records them as the
# project's reference numbers, benchmarks/results.json and benchmarks/charts/ (commit them with RESULTS.md).
BENCH_DIR = $(if $(RECORD),benchmarks,build/bench)
bench: build $(BENCH_STAMP)
	mkdir -p $(BENCH_DIR)/charts
	$(PY) benchmarks/run.py --json $(BENCH_DIR)/results.json
	$(PY) benchmarks/charts.py $(BENCH_DIR)/results.json $(BENCH_DIR)/charts

# The same measurements through pytest-benchmark (statistics, JSON export).
bench-pytest: build $(BENCH_STAMP)
	$(VENV)/bin/pytest -q benchmarks -m "not slow" -p no:cacheprovider --benchmark-only

# On a machine with a CUDA torch and a GPU (the GPU machines: torch 2.11 + CUDA 13, no network): build with the CUDA
# sources on, for Hopper, into the environment of the `python3` that holds torch (its packages already satisfy
# requirements-build.txt; the references of requirements-dev.txt cannot be installed there, and the tests that
# need them are skipped), run the test suite (the CUDA tests run there), then the GPU benchmark against cuDNN,
# which writes its table to GPU_RESULTS. Each part has its own time limit, so that a slow one cannot eat the others'
# time: under 8 minutes in all. (-P: the installed pyseq, not the source folder of the working directory.)
GPU_RESULTS ?= benchmarks/gpu_results.md
gpu-check:
	prefix="$$($(PYTHON) -c 'import sys; print(sys.prefix)')" && \
	timeout 200 $(MAKE) build VENV="$$prefix" TORCH_SPEC= DEV_REQUIREMENTS=requirements-build.txt PYSEQ_CUDA=on \
		PYSEQ_CUDA_ARCHITECTURES=90 && \
	"$$prefix/bin/python" -P -c "import pyseq, json; info = pyseq.build_info(); print(json.dumps(info)); assert info['cuda']" && \
	{ timeout 150 "$$prefix/bin/python" -P -m pytest -q -x -p no:cacheprovider; tests=$$?; \
	  timeout 120 "$$prefix/bin/python" benchmarks/gpu_check.py --budget 90 --out $(GPU_RESULTS); bench=$$?; \
	  echo "gpu-check: tests exit $$tests, benchmark exit $$bench"; test $$tests = 0 -a $$bench = 0; }

clean:
	rm -rf build dist *.egg-info
