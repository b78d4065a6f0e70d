# gslrm — every target works from a fresh clone: the venv and its packages are installed on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= osmesa
export WANDB_MODE ?= offline
export PYOPENGL_PLATFORM ?= $(MUJOCO_GL)

.DEFAULT_GOAL := help
.PHONY: help install sysdeps gpu-setup gpu-check train test test-fast test-gpu lint format bench data-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that no later install swaps it for another build
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,slurm,viewer,rodent,import]'
	$(PY) -m gslrm.render.compiled
	@touch $(STAMP)

sysdeps: ## Debian packages: OSMesa (MuJoCo on CPU); for the tests, munge + slurm-wlm (a one-node SLURM) and chromium
	@missing=""; \
	  ldconfig -p | grep -q libOSMesa || missing="$$missing libosmesa6"; \
	  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing="$$missing munge"; \
	  command -v sbatch >/dev/null || missing="$$missing slurm-wlm"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing Debian packages:$$missing (sudo apt-get install -y$$missing); the SLURM and browser tests skip without them"; fi; fi

install: $(STAMP) sysdeps ## create .venv and install torch + the project

train: install ## train with the defaults (rodent data generated on first use, tiny model)
	@if $(PY) -c "from gslrm.losses.perceptual import vgg19_weights_available as ok; raise SystemExit(not ok())"; then \
	  $(PY) train.py $(ARGS); \
	else \
	  echo "NOTE: the VGG19 weights are not cached and could not be downloaded, so FaceLift's perceptual term cannot"; \
	  echo "      be built: training with SSIM in its place (loss=no_vgg: MSE + SSIM + coverage). 'python -m gslrm.weights"; \
	  echo "      fetch vgg19' where there is network (then copy ~/.cache/torch) gives the whole default loss (docs/weights.md)."; \
	  $(PY) train.py loss=no_vgg loss.perceptual.weight=0 $(ARGS); \
	fi

# pytest-xdist: TEST_WORKERS processes share the tests; the SLURM scenarios stay together on one (--dist loadgroup)
TEST_WORKERS ?= 2
test: install ## the whole test suite (slow tests included)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 $(ARGS)

gpu-setup: install ## build gsplat's CUDA kernels once (minutes, needs nvcc) and check them against the CPU rasterizer
	$(PY) -m gslrm.render.gsplat_kernels

test-gpu: gpu-setup ## the GPU suite (pytest -m gpu): gsplat parity, bf16, deferred, FaceLift size, entry points on CUDA
	MUJOCO_GL=$${GPU_MUJOCO_GL:-egl} PYOPENGL_PLATFORM=$${GPU_MUJOCO_GL:-egl} $(PY) -m pytest -q -m gpu -s $(ARGS); \
	  status=$$?; [ $$status -eq 5 ] && echo "no GPU test collected" || exit $$status

gpu-check: install ## one call on a GPU machine: gpu-setup, test-gpu, 300 bf16 steps, the GPU bench; logs in gpu-check/
	MUJOCO_GL=$${GPU_MUJOCO_GL:-egl} $(PY) -m gslrm.bench.gpu_check --out gpu-check $(ARGS)

test-fast: install ## the test suite without the slow end-to-end tests
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check gslrm tests train.py eval.py refine.py
	$(VENV)/bin/ruff format --check gslrm tests train.py eval.py refine.py

format: install ## ruff format + autofix
	$(VENV)/bin/ruff format gslrm tests train.py eval.py refine.py
	$(VENV)/bin/ruff check --fix gslrm tests train.py eval.py refine.py

bench: install ## performance table (python -m gslrm.bench)
	$(PY) -m gslrm.bench $(ARGS)

data-check: install ## check a dataset: make data-check ARGS=/path/to/root
	$(PY) -m gslrm.data check $(ARGS)

clean: ## remove caches (not the venv, not data)
	rm -rf .pytest_cache .ruff_cache outputs multirun
