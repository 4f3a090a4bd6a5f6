"""The model.providers setting: checked against the real onnxruntime at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import onnxruntime as ort
import pytest

from edge_runtime.providers import (
    ProviderError,
    check_providers,
    installed_ort_distributions,
)
from edge_runtime.settings import SettingsError, load_settings


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


def test_a_bad_provider_stops_the_daemon_at_start_up(tmp_path):
    wanted = "CUDAExecutionProvider,CPUExecutionProvider"  # a Jetson's, on a CPU-only build
    env = os.environ | {"EDGE_RUNTIME_MODEL_PROVIDERS": wanted}
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", "--data-dir",
                           str(tmp_path), "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("edge-runtime: configuration error: model.providers: "
                               "CUDAExecutionProvider not available")


def test_providers_from_toml_and_environment(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[model]\nproviders = ["CPUExecutionProvider"]\n')
    assert load_settings(config, environ={}).model.providers == ("CPUExecutionProvider",)
    env = {"EDGE_RUNTIME_MODEL_PROVIDERS": " CPUExecutionProvider "}
    assert load_settings(None, environ=env).model.providers == ("CPUExecutionProvider",)
    config.write_text("[model]\nproviders = [1]\n")
    with pytest.raises(SettingsError, match="model.providers: expected a list of names"):
        load_settings(config, environ={})
    config.write_text('[model]\nproviders = "TensorrtExecutionProvider"\n')
    with pytest.raises(SettingsError, match="^model.providers: TensorrtExecutionProvider not"):
        load_settings(config, environ={})
