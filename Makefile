# Set-up and the two commands README promises. Every target creates or refreshes .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export EDGE_RUNTIME_WEIGHTS_DIR ?= $(SHARED)/models/mcunet
# Exact versions of everything (torch and mcunet included) live in this one file.
CONSTRAINTS ?= deploy/constraints.txt
# Where torch comes from: cpu (PyTorch's CPU index; a matching wheel in pip's find-links
# counts too), an index URL, a wheel, system or none. See deploy/install_torch.sh.
TORCH_SOURCE ?= cpu
# arm64 check: the cached Debian bookworm root (built once, about 6 minutes) and the
# directory the check works in.
ARM64_ROOT ?= /var/cache/edge-runtime-arm64/root
ARM64_WORK ?= /tmp/edge-runtime-arm64-check

.PHONY: venv toolchain test lint run demo bench clean arm64-root arm64-check

# torch first, from a source without CUDA (never PyPI's torch); then the project with ONNX
# Runtime's CPU build, the training and the test extras, all under the lock.
$(BIN)/.stamp: pyproject.toml Makefile $(CONSTRAINTS) deploy/install_torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	deploy/install_torch.sh $(VENV) $(TORCH_SOURCE) $(CONSTRAINTS)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[cpu,train,test]'
	touch $@

venv: $(BIN)/.stamp

# The firmware test builds the reference firmware with avr-gcc (Debian: gcc-avr, avr-libc);
# the camera tests run a real GStreamer pipeline (gstreamer1.0-tools, -plugins-base);
# the event tests start a real MQTT broker (mosquitto); the page tests drive chromium; the
# training worker runs on tcmalloc as on a board (libtcmalloc-minimal4).
TOOL_PACKAGES = gcc-avr avr-libc gstreamer1.0-tools gstreamer1.0-plugins-base \
	mosquitto mosquitto-clients chromium chromium-driver libtcmalloc-minimal4
toolchain:
	@{ command -v avr-gcc && command -v gst-launch-1.0 && gst-inspect-1.0 videotestsrc && \
	   command -v mosquitto && command -v chromedriver && \
	   ldconfig -p | grep -q libtcmalloc_minimal; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends $(TOOL_PACKAGES); \
	  else echo "install the tools: sudo apt-get install $(TOOL_PACKAGES)"; exit 1; fi; }

test: venv toolchain
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests deploy
	$(BIN)/vermin -q -t=3.10- --no-tips --violations edge_runtime firmware_bridge benchmarks tests deploy
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check edge_runtime firmware_bridge benchmarks tests deploy
	$(BIN)/vermin -q -t=3.10- --no-tips --violations edge_runtime firmware_bridge benchmarks tests deploy

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

# Serving side on arm64 (Raspberry Pi OS's base) under qemu: see README, "arm64 check".
arm64-root: venv
	$(BIN)/python deploy/arm64_check.py --root $(ARM64_ROOT) --build-only

arm64-check: venv
	$(BIN)/python deploy/arm64_check.py --root $(ARM64_ROOT) --work $(ARM64_WORK) \
	  --python $(abspath $(BIN))/python --data $(SHARED)/data

clean:
	rm -rf $(VENV) models out
