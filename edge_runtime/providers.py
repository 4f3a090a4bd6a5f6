"""ONNX Runtime execution providers for the ``model.providers`` setting, checked at start-up
so a Jetson's TensorRT/CUDA choice fails loudly instead of silently running on the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata

KEY = "model.providers"
DEFAULT = ("CPUExecutionProvider",)
# distributions that all install the one `onnxruntime` module; two at once break each other
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                     "onnxruntime-openvino", "onnxruntime-qnn")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ProviderError(ValueError):
    """The providers cannot run here; one line that names the setting."""


def installed_ort_distributions() -> list[str]:
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def check_providers(requested: Sequence[str], available: Sequence[str] | None = None,
                    distributions: Sequence[str] | None = None) -> list[str]:
    """The requested providers, in order, if this onnxruntime has them all."""
    distributions = installed_ort_distributions() if distributions is None else distributions
    if len(distributions) > 1:
        raise ProviderError(f"{KEY}: {' and '.join(distributions)} are both installed; they "
                            "share one module and break each other: uninstall all but one")
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    names = [str(name).strip() for name in requested]
    if not names or not all(names):
        raise ProviderError(f"{KEY}: give at least one provider, e.g. {list(DEFAULT)}")
    if len(set(names)) != len(names):
        raise ProviderError(f"{KEY}: {names} names a provider twice")
    missing = [name for name in names if name not in available]
    if missing:
        hint = ""
        if set(missing) & set(GPU_PROVIDERS) and "onnxruntime-gpu" not in distributions:
            hint = " (GPU providers need onnxruntime-gpu: deploy/install.sh --ort onnxruntime-gpu)"
        raise ProviderError(f"{KEY}: {', '.join(missing)} not available in this onnxruntime; "
                            f"available: {', '.join(available)}{hint}")
    return names
