#!/usr/bin/env bash
# Install edge-runtime as a systemd service on Raspberry Pi OS / Jetson (Debian-based).
# Idempotent: running it again upgrades the code and keeps config and data.
#
#   sudo deploy/install.sh                  install or upgrade, enable and start
#   sudo deploy/install.sh --uninstall      remove service, code, user; keep data and config
#   sudo deploy/install.sh --uninstall --purge   also delete /var/lib/edge-runtime and config
# Options: --weights DIR   copy the two MCUNet-in3 files from DIR
#          --no-start      install but do not start; --no-pip  skip Python installs
# EDGE_RUNTIME_ROOT=/some/dir installs into a staging tree (for tests; no users, no systemd).
set -euo pipefail

ROOT="${EDGE_RUNTIME_ROOT:-}"
PREFIX="$ROOT/opt/edge-runtime"
CONF="$ROOT/etc/edge-runtime"
DATA="$ROOT/var/lib/edge-runtime"
UNIT="$ROOT/etc/systemd/system/edge-runtime.service"
RULES="$ROOT/etc/udev/rules.d/99-edge-runtime.rules"
SERVICE_USER=edge-runtime
TORCH_VERSION=2.13.0
MCUNET_VERSION=0.1.1.post202206170200
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

uninstall=0 purge=0 start=1 pip=1 weights=""
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --no-start) start=0 ;;
    --no-pip) pip=0 ;;
    --weights) weights="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

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
  apt-get install -y -qq python3-venv python3-dev
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
  say "virtualenv in $PREFIX/venv"
  # system site packages: picamera2 and libcamera come from the OS, not PyPI
  [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv --system-site-packages "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q --upgrade pip
  "$PREFIX/venv/bin/pip" install -q "torch==$TORCH_VERSION"   # pinned: never a CUDA build
  "$PREFIX/venv/bin/pip" install -q --no-deps "mcunet==$MCUNET_VERSION"
  "$PREFIX/venv/bin/pip" install -q --upgrade "$SRC"
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
