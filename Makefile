# The two commands of the README: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install clean survey-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/pip install -q -e '.[dev]' >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(BIN)/python -c "import torch, torchvision, graphs, surgery"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The libraries of benchmarks/coverage.py's other sources (diffusers, segmentation-models-pytorch);
# constraints.txt keeps torch and torchvision at the versions above. Not needed by `make test`.
survey-deps: $(STAMP)
	@echo "survey-deps: pip install -e '.[survey]' -c constraints.txt (log: $(VENV)/pip.log)"
	@$(BIN)/pip install -q -c constraints.txt -e '.[survey]' >> $(VENV)/pip.log 2>&1 \
		|| (tail -20 $(VENV)/pip.log; exit 1)
	@echo "survey-deps: checking the pins and imports"
	@$(BIN)/python -c "import torch, torchvision, diffusers, segmentation_models_pytorch as s; \
		print('survey-deps: torch', torch.__version__, 'torchvision', torchvision.__version__, \
		'diffusers', diffusers.__version__, 'segmentation-models-pytorch', s.__version__)"

clean:
	rm -rf $(VENV) out
