PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/default

.PHONY: install test demo bench train-default clean

install: $(BIN)/edgeseg

$(BIN)/edgeseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned to the pair this machine has on disk
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/pip check
	touch $(BIN)/edgeseg

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/edgeseg eval --count 100
	$(BIN)/edgeseg export --out $(OUT)

bench: install
	$(BIN)/python benchmarks/run_bench.py

# Reproduces the packaged default model (see README "Packaged default model").
train-default: install
	$(BIN)/edgeseg train --recipe recipes/portrait_unet_mnv3s_256.yaml --out runs/portrait_default
	$(BIN)/python -m edgeseg.models.package_default runs/portrait_default/best.pt

clean:
	rm -rf out runs .pytest_cache
