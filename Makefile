PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/default

.PHONY: install test demo bench train-default train-parts clean

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
# Five stages on the built-in synthetic set (2000 + 4 x 3000 steps, ~1.5 h on 2 CPU cores with
# OMP_NUM_THREADS=1); each stage fine-tunes the previous best on freshly seeded samples.
R := recipes/portrait_unet_mnv3min_s4_256.yaml
RUN := OMP_NUM_THREADS=1 $(BIN)/edgeseg train --recipe $(R)
STAGE := --set train.epochs=6 --set train.steps_per_epoch=500
CALM := --set data.augment.rotate=0 --set data.augment.color=0.05 --set 'data.augment.scale=[0.9,1.1]'
train-default: install
	$(RUN) --out runs/portrait_default
	$(RUN) --weights runs/portrait_default/best.pt --out runs/portrait_default_ft $(STAGE) \
	  --set train.lr=0.002 --set data.synth_train=4000 --set data.seed=1
	$(RUN) --weights runs/portrait_default_ft/best.pt --out runs/portrait_default_ft2 $(STAGE) \
	  --set train.lr=0.001 --set data.synth_train=6000 --set data.seed=2 \
	  --set data.augment.rotate=5 --set data.augment.color=0.1 --set 'data.augment.scale=[0.9,1.1]'
	$(RUN) --weights runs/portrait_default_ft2/best.pt --out runs/portrait_default_ft3 $(STAGE) \
	  --set train.lr=0.0007 --set data.synth_train=8000 --set data.seed=3 $(CALM)
	$(RUN) --weights runs/portrait_default_ft3/best.pt --out runs/portrait_default_ft4 $(STAGE) \
	  --set train.lr=0.0004 --set data.synth_train=8000 --set data.seed=4 $(CALM)
	$(BIN)/python scripts/package_default.py runs/portrait_default_ft4/best.pt

# Reproduces the packaged parts model (`parts`; see README "Packaged parts model"): two stages on the
# built-in synthetic parts set (4000 + 3000 steps, ~45 min on 2 CPU cores with OMP_NUM_THREADS=1).
P := recipes/parts_unet_256.yaml
PRUN := OMP_NUM_THREADS=1 $(BIN)/edgeseg train --recipe $(P)
train-parts: install
	$(PRUN) --out runs/parts
	$(PRUN) --weights runs/parts/best.pt --out runs/parts_ft --set train.epochs=3 --set train.steps_per_epoch=1000 \
	  --set train.lr=0.001 --set data.synth_train=6000 --set data.seed=1 $(CALM)
	$(BIN)/python scripts/package_default.py --as parts runs/parts_ft/best.pt

clean:
	rm -rf out runs .pytest_cache
