"""The model.providers setting: checked against the real onnxruntime at start-up."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from edge_runtime.providers import (
    ProviderError,
    check_providers,
    installed_ort_distributions,
    parse_providers,
)


def test_available_providers_pass_in_order():
    available = ort.get_available_providers()
    assert check_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert check_providers(available[::-1]) == available[::-1]


def test_bad_provider_is_one_line_naming_the_key():
    with pytest.raises(ProviderError) as info:
        check_providers(["TensorrtExecutionProvider", "CPUExecutionProvider"])
    message = str(info.value)
    assert message.startswith("model.providers: TensorrtExecutionProvider not available")
    assert "\n" not in message and "CPUExecutionProvider" in message  # lists what there is
    assert "onnxruntime-gpu" in message  # and how to get the GPU build
    for bad in ([], ["CPUExecutionProvider", "CPUExecutionProvider"], ["cpu"]):
        with pytest.raises(ProviderError, match=r"^model\.providers: "):
            check_providers(bad)


def test_two_onnxruntime_builds_side_by_side_are_refused():
    assert len(installed_ort_distributions()) == 1  # this venv: the CPU build only
    with pytest.raises(ProviderError, match="onnxruntime and onnxruntime-gpu are both installed"):
        check_providers(["CPUExecutionProvider"], distributions=["onnxruntime", "onnxruntime-gpu"])


def test_parse_from_toml_list_or_environment_string():
    assert parse_providers("CUDAExecutionProvider, CPUExecutionProvider") == (
        "CUDAExecutionProvider", "CPUExecutionProvider")
    assert parse_providers(["CPUExecutionProvider"]) == ("CPUExecutionProvider",)
    with pytest.raises(ProviderError, match="expected a list"):
        parse_providers(["CPUExecutionProvider", 3])
