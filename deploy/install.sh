#!/usr/bin/env bash
# Install edge-runtime as a systemd service on Raspberry Pi OS / Jetson (Debian-based).
# Idempotent: running it again upgrades the code and keeps config and data.
#
#   sudo deploy/install.sh                  install or upgrade, enable and start
#   sudo deploy/install.sh --uninstall      remove service, code, user; keep data and config
#   sudo deploy/install.sh --uninstall --purge   also delete /var/lib/edge-runtime and config
# Options: --weights DIR   copy the two MCUNet-in3 files from DIR
#          --no-start      install but do not start; --no-pip  skip Python installs
#          --torch-source S   where torch comes from (env EDGE_RUNTIME_TORCH_SOURCE):
#                             cpu (default: PyTorch's CPU index, never a CUDA build),
#                             an index URL, a wheel path or URL (NVIDIA's Jetson build),
#                             system (the OS's torch), none (serve only, no training);
#                             see deploy/install_torch.sh
#          --ort PKG          onnxruntime (default) or onnxruntime-gpu (Jetson); the other
#                             one is removed: both in one venv break each other
#          --ort-index URL    extra index that has PKG (NVIDIA's onnxruntime-gpu for Jetson)
# Versions come from deploy/constraints.txt (the lock), wheels only: nothing compiles on
# the board. The venv sees the OS's packages (picamera2, libcamera); when the OS ships numpy
# 1.x (Raspberry Pi OS bookworm: picamera2's simplejpeg is built against it), numpy stays 1.x.
# EDGE_RUNTIME_ROOT=/some/dir installs into a staging tree (for tests; no users, no systemd).
set -euo pipefail

ROOT="${EDGE_RUNTIME_ROOT:-}"
PREFIX="$ROOT/opt/edge-runtime"
CONF="$ROOT/etc/edge-runtime"
DATA="$ROOT/var/lib/edge-runtime"
UNIT="$ROOT/etc/systemd/system/edge-runtime.service"
RULES="$ROOT/etc/udev/rules.d/99-edge-runtime.rules"
SERVICE_USER=edge-runtime
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$SRC/deploy/constraints.txt"

uninstall=0 purge=0 start=1 pip=1 weights=""
torch_source="${EDGE_RUNTIME_TORCH_SOURCE:-cpu}" ort=onnxruntime ort_index=""
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --no-start) start=0 ;;
    --no-pip) pip=0 ;;
    --weights) weights="$2"; shift ;;
    --torch-source) torch_source="$2"; shift ;;
    --ort) ort="$2"; shift ;;
    --ort-index) ort_index="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$ort" in
  onnxruntime) ort_extra=cpu other_ort=onnxruntime-gpu ;;
  onnxruntime-gpu) ort_extra=gpu other_ort=onnxruntime ;;
  *) echo "--ort must be onnxruntime or onnxruntime-gpu, not $ort" >&2; exit 2 ;;
esac

live() { [ -z "$ROOT" ]; }  # acting on the real system (not a staging tree)
say() { echo "edge-runtime install: $*"; }

if live && [ "$(id -u)" -ne 0 ]; then
  echo "run as root (sudo $0)" >&2
  exit 1
fi

if [ "$uninstall" = 1 ]; then
  if live; then
    systemctl disable --now edge-runtime.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$RULES"
  rm -rf "$PREFIX"
  if live; then
    systemctl daemon-reload || true
    udevadm control --reload-rules 2>/dev/null || true
    userdel "$SERVICE_USER" 2>/dev/null || true
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$DATA" "$CONF"
    say "removed, data and config purged"
  else
    say "removed; data kept in $DATA, config in $CONF"
  fi
  exit 0
fi

if live; then
  say "system packages"
  apt-get update -qq
  # tcmalloc: the training worker's allocator (training.allocator), ~100 MB less at its peak
  apt-get install -y -qq python3-venv python3-dev libtcmalloc-minimal4
  if apt-cache show python3-picamera2 >/dev/null 2>&1; then
    apt-get install -y -qq python3-picamera2  # the Pi camera stack comes from the OS
  fi
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/edge-runtime --shell /usr/sbin/nologin \
      --user-group "$SERVICE_USER"
  fi
  for group in dialout video; do
    getent group "$group" >/dev/null && usermod -aG "$group" "$SERVICE_USER"
  done
fi

install -d -m 0755 "$PREFIX" "$CONF" "$(dirname "$UNIT")" "$(dirname "$RULES")"
install -d -m 0750 "$DATA" "$DATA/weights"
live && chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA"

if [ "$pip" = 1 ]; then
  venv="$PREFIX/venv"
  say "virtualenv in $venv"
  # system site packages: picamera2 and libcamera come from the OS, not PyPI
  [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$SRC/deploy/board_constraints.sh" "$venv/bin/python" "$CONSTRAINTS" "$ort" \
    > "$venv/constraints.txt"
  "$SRC/deploy/install_torch.sh" "$venv" "$torch_source" "$venv/constraints.txt"
  extras="$ort_extra"
  [ "$torch_source" = none ] || extras="$extras,train"
  "$venv/bin/pip" uninstall -q -y "$other_ort" 2>/dev/null || true
  say "edge-runtime[$extras] (wheels only, $(basename "$CONSTRAINTS"))"
  "$venv/bin/pip" install -q --upgrade --only-binary=:all: -c "$venv/constraints.txt" \
    ${ort_index:+--extra-index-url "$ort_index"} "$SRC[$extras]"
fi
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

if [ ! -f "$CONF/config.toml" ]; then
  install -m 0640 "$SRC/deploy/config.toml" "$CONF/config.toml"
  live && chgrp "$SERVICE_USER" "$CONF/config.toml"
  say "wrote $CONF/config.toml"
else
  say "kept existing $CONF/config.toml"
fi

if [ -n "$weights" ]; then
  install -m 0644 "$weights/mcunet-320kb-1mb_imagenet.json" \
    "$weights/mcunet-320kb-1mb_imagenet.pth" "$DATA/weights/"
  live && chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA/weights"
fi

install -m 0644 "$SRC/deploy/99-edge-runtime.rules" "$RULES"
install -m 0644 "$SRC/deploy/edge-runtime.service" "$UNIT"
if live; then
  udevadm control --reload-rules && udevadm trigger --subsystem-match=tty || true
  systemctl daemon-reload
  systemctl enable edge-runtime.service
  [ "$start" = 1 ] && systemctl restart edge-runtime.service
fi
say "done"
