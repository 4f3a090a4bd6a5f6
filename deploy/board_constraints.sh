#!/usr/bin/env bash
# Print the lock adapted to one board's virtualenv (used by deploy/install.sh):
#   deploy/board_constraints.sh VENV_PYTHON LOCK ORT_PACKAGE > VENV/constraints.txt
# - numpy stays on the OS's major version when the venv sees an OS numpy 1.x (Raspberry Pi
#   OS bookworm: picamera2's simplejpeg is compiled against numpy 1.24; numpy 2 in the venv
#   makes `import picamera2` fail, raspberrypi/picamera2#1088, #1211).
# - onnxruntime's pin is dropped for onnxruntime-gpu (it comes from NVIDIA's index).
set -euo pipefail

python="$1" lock="$2" ort="${3:-onnxruntime}"
os_numpy="$("$python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
drop='^$'
[ "$ort" = onnxruntime-gpu ] && drop='^onnxruntime=='
if [ "${os_numpy%%.*}" = 1 ]; then
  echo "board_constraints: the OS has numpy $os_numpy (picamera2, simplejpeg): numpy stays 1.x" >&2
  grep -v -e '^numpy==' -e "$drop" "$lock"
  echo "numpy>=$os_numpy,<2"
else
  grep -v -e "$drop" "$lock"
fi
