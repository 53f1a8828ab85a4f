# The two commands of the README: `make demo` and `make test`.
# `make demo` installs only what examples/demo.py uses: torch and torchvision at the pins below,
# the base dependencies and the `export` extra (onnx, onnxruntime). `make test` adds the `dev`
# extra (pytest, hypothesis, ruff, torch-pruning, timm, transformers, ultralytics). Torch goes in
# first; every extra installs with -c constraints.txt, so pip never moves torch or torchvision.
# Each install step prints one line: what it installs and the log file.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
LOG     := $(VENV)/pip.log
TORCH   := torch==2.14.1 torchvision==0.29.1
PINNED  := $(VENV)/.installed-torch
DEMO    := $(VENV)/.installed-demo
DEV     := $(VENV)/.installed-dev
PIP     := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: demo test install clean survey-deps

$(BIN)/python:
	@echo "make: creating the virtual environment $(VENV) ($(PY) -m venv)"
	@$(PY) -m venv $(VENV)

$(PINNED): constraints.txt | $(BIN)/python
	@echo "install: $(TORCH) (log: $(LOG))"
	@$(PIP) $(TORCH) > $(LOG) 2>&1 || (tail -20 $(LOG); exit 1)
	@touch $@

$(DEMO): pyproject.toml $(PINNED)
	@echo "install: model-surgery (editable), its base dependencies and the export extra" \
		"(onnx, onnxruntime) (log: $(LOG))"
	@$(PIP) -c constraints.txt -e '.[export]' >> $(LOG) 2>&1 || (tail -20 $(LOG); exit 1)
	@$(BIN)/python -c "import torch, torchvision, onnx, onnxruntime, graphs, surgery"
	@touch $@

$(DEV): pyproject.toml $(DEMO)
	@echo "install: the dev extra (pytest, hypothesis, ruff, torch-pruning, timm, transformers," \
		"ultralytics) (log: $(LOG))"
	@$(PIP) -c constraints.txt -e '.[dev]' >> $(LOG) 2>&1 || (tail -20 $(LOG); exit 1)
	@$(BIN)/python -c "import pytest, torch_pruning, timm, transformers, ultralytics"
	@touch $@

install: $(DEV)

test: $(DEV)
	$(BIN)/python -m pytest -q

demo: $(DEMO)
	$(BIN)/python examples/demo.py

# The libraries of benchmarks/coverage.py's other sources (diffusers, segmentation-models-pytorch);
# constraints.txt keeps torch and torchvision at the versions above. Not needed by `make test`.
survey-deps: $(DEV)
	@echo "install: the survey extra (diffusers, segmentation-models-pytorch) (log: $(LOG))"
	@$(PIP) -c constraints.txt -e '.[survey]' >> $(LOG) 2>&1 || (tail -20 $(LOG); exit 1)
	@echo "survey-deps: checking the pins and imports"
	@$(BIN)/python -c "import torch, torchvision, diffusers, segmentation_models_pytorch as s; \
		print('survey-deps: torch', torch.__version__, 'torchvision', torchvision.__version__, \
		'diffusers', diffusers.__version__, 'segmentation-models-pytorch', s.__version__)"

clean:
	rm -rf $(VENV) out
