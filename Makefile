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

# Reproduces the packaged default model (see README "Packaged default model"). Seven stages on the
# built-in synthetic set (~2.2 h on 2 CPU cores with OMP_NUM_THREADS=1); each fine-tunes the previous
# best on freshly seeded samples. Stages 1-6 train the stride-4 decoder [48,32,24] (stage 6 with the
# Boundary IoU band weighted up); then scripts/grow_decoder.py adds a fourth up-block (head at stride 2)
# and stage 7 trains the recipe's model; scripts/fold_input_normalization.py gives it one integer
# mean/std for all channels (int8 TFLite then needs no normalization op) before it is packaged.
R := recipes/portrait_unet_mnv3min_s2_256.yaml
RUN := OMP_NUM_THREADS=1 $(BIN)/edgeseg train --recipe $(R)
S4 := --set 'model.decoder_channels=[48,32,24]'
STAGE := --set train.epochs=6 --set train.steps_per_epoch=500
CALM := --set data.augment.rotate=0 --set data.augment.color=0.05 --set 'data.augment.scale=[0.9,1.1]'
D := runs/portrait_default
train-default: install
	$(RUN) $(S4) --out $(D)
	$(RUN) $(S4) --weights $(D)/best.pt --out $(D)_ft $(STAGE) \
	  --set train.lr=0.002 --set data.synth_train=4000 --set data.seed=1
	$(RUN) $(S4) --weights $(D)_ft/best.pt --out $(D)_ft2 $(STAGE) \
	  --set train.lr=0.001 --set data.synth_train=6000 --set data.seed=2 \
	  --set data.augment.rotate=5 --set data.augment.color=0.1 --set 'data.augment.scale=[0.9,1.1]'
	$(RUN) $(S4) --weights $(D)_ft2/best.pt --out $(D)_ft3 $(STAGE) \
	  --set train.lr=0.0007 --set data.synth_train=8000 --set data.seed=3 $(CALM)
	$(RUN) $(S4) --weights $(D)_ft3/best.pt --out $(D)_ft4 $(STAGE) \
	  --set train.lr=0.0004 --set data.synth_train=8000 --set data.seed=4 $(CALM)
	$(RUN) $(S4) --weights $(D)_ft4/best.pt --out $(D)_ft5 $(STAGE) \
	  --set train.lr=0.0005 --set data.synth_train=8000 --set data.seed=5 --set train.boundary_weight=2 $(CALM)
	$(BIN)/python scripts/grow_decoder.py $(D)_ft5/best.pt 48,32,24,16 $(D)_s2_init.pt
	$(RUN) --weights $(D)_s2_init.pt --out $(D)_s2 --set train.epochs=9 --set train.steps_per_epoch=500 \
	  --set train.lr=0.0015 --set data.synth_train=8000 --set data.seed=6 --set train.boundary_weight=1 \
	  --set data.augment.rotate=5 --set data.augment.color=0.1 --set 'data.augment.scale=[0.9,1.1]'
	$(BIN)/python scripts/fold_input_normalization.py $(D)_s2/best.pt 114 58 $(D)_s2_folded.pt
	$(BIN)/python scripts/package_default.py $(D)_s2_folded.pt

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
