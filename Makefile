# Set-up and the two commands README promises. Every target creates or refreshes .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION  ?= 2.13.0
MCUNET_VERSION ?= 0.1.1.post202206170200
SHARED ?= $(abspath ../shared)
export EDGE_RUNTIME_WEIGHTS_DIR ?= $(SHARED)/models/mcunet

.PHONY: venv toolchain test lint run demo bench clean

# torch goes first and pinned, so nothing later can pull a CUDA build; mcunet without deps.
$(BIN)/.stamp: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q --no-deps mcunet==$(MCUNET_VERSION)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.stamp

# The firmware test builds the reference firmware with avr-gcc (Debian: gcc-avr, avr-libc);
# the event tests start a real MQTT broker (Debian: mosquitto).
toolchain:
	@command -v avr-gcc >/dev/null && command -v mosquitto >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    apt-get install -y -qq gcc-avr avr-libc mosquitto mosquitto-clients; \
	  else echo "sudo apt-get install gcc-avr avr-libc mosquitto mosquitto-clients"; exit 1; fi; }

test: venv toolchain
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests

# The main job: the daemon on its embedded defaults (127.0.0.1:8765, data in
# ~/.local/share/edge-runtime). Ctrl-C stops it.
run: venv
	@echo "edge-runtime: data in $${EDGE_RUNTIME_DATA_DIR:-$$HOME/.local/share/edge-runtime}; page at http://127.0.0.1:8765/"
	$(BIN)/edge-runtime serve

# Train on one category and inspect one of its test images, from the command line.
demo: venv
	$(BIN)/edge-runtime fit --data $(SHARED)/data --category bottle --out models/bottle --epochs 3 --max-images 64
	$(BIN)/edge-runtime inspect $(SHARED)/data/bottle/test/broken_large/000.png --model models/bottle --out out/bottle_map.png

bench: venv
	for b in latency macs replay_codecs service_load continual; do \
	  $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

clean:
	rm -rf $(VENV) models out
