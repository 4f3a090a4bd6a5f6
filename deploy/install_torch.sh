#!/usr/bin/env bash
# Install torch (and mcunet) into a virtualenv without ever pulling a CUDA build from PyPI.
# Used by the Makefile (venv) and deploy/install.sh, so both get torch the same way.
#
#   deploy/install_torch.sh VENV SOURCE [CONSTRAINTS]
#
# SOURCE says where torch comes from:
#   cpu          PyTorch's CPU index (https://download.pytorch.org/whl/cpu), the version
#                pinned in CONSTRAINTS. A wheel already in pip's find-links (pip.conf)
#                that matches the pin is used as well.
#   https://...  another index with the pinned version (a mirror of the CPU index)
#   *.whl        a wheel file or URL, e.g. NVIDIA's Jetson build; the pin is not applied
#   system       keep the torch the OS provides (the venv sees system site packages),
#                e.g. a Jetson's NVIDIA build; nothing is installed
#   none         no torch: the board serves models trained elsewhere and cannot train
# Only torch itself comes from that source (--no-deps); its dependencies come from the
# normal index, constrained like everything else.
set -euo pipefail

venv="$1" source="$2"
constraints="${3:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/constraints.txt}"
pip=("$venv/bin/pip" install -q -c "$constraints")
unpinned() {  # the constraints without the torch pin, for a torch that is not PyTorch's +cpu
  grep -v '^torch==' "$constraints" > "$venv/constraints-no-torch.txt"
  pip=("$venv/bin/pip" install -q -c "$venv/constraints-no-torch.txt")
}
say() { echo "install_torch: $*"; }

case "$source" in
  none)
    say "no torch: serving only, this board cannot train (models come from elsewhere)"
    exit 0 ;;
  system)
    "$venv/bin/python" -c "import torch" 2>/dev/null \
      || { echo "install_torch: --torch-source system, but the OS has no torch" >&2; exit 1; }
    unpinned ;;
  cpu)
    "${pip[@]}" --only-binary=:all: --no-deps --index-url https://download.pytorch.org/whl/cpu \
      torch ;;
  http://*.whl | https://*.whl | *.whl)
    unpinned
    "${pip[@]}" --no-deps "$source" ;;
  http://* | https://*)
    "${pip[@]}" --only-binary=:all: --no-deps --index-url "$source" torch ;;
  *)
    echo "install_torch: unknown torch source '$source' (cpu, URL, wheel, system, none)" >&2
    exit 2 ;;
esac

# torch's own requirements (filelock, sympy, ...), minus optional extras
"$venv/bin/python" - > "$venv/torch-requirements.txt" <<'PY'
from importlib.metadata import requires

print("\n".join(r for r in requires("torch") or [] if "extra ==" not in r))
PY
"${pip[@]}" -r "$venv/torch-requirements.txt"
"${pip[@]}" --no-deps mcunet
say "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') from $source"
