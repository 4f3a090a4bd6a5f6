# Set-up and the two commands README promises. Every target creates or refreshes .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION  ?= 2.13.0
MCUNET_VERSION ?= 0.1.1.post202206170200
SHARED ?= $(abspath ../shared)
export EDGE_RUNTIME_WEIGHTS_DIR ?= $(SHARED)/models/mcunet

.PHONY: venv test lint run demo bench clean

# torch goes first and pinned, so nothing later can pull a CUDA build; mcunet without deps.
$(BIN)/.stamp: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q --no-deps mcunet==$(MCUNET_VERSION)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.stamp

test: venv
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests

# The main job. For now: train on one category and inspect one of its test images.
run: demo

demo: venv
	$(BIN)/edge-runtime fit --data $(SHARED)/data --category bottle --out models/bottle --epochs 3 --max-images 64
	$(BIN)/edge-runtime inspect $(SHARED)/data/bottle/test/broken_large/000.png --model models/bottle --out out/bottle_map.png

bench: venv
	$(BIN)/python benchmarks/latency.py --quick

clean:
	rm -rf $(VENV) models out
