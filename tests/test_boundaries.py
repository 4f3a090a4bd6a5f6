"""The serving process never loads torch or scikit-learn: a folder boundary, checked here.

Serving code (the API, services, inference, replay, storage, the serial bridge) must stay
importable and runnable on a board that has neither; torch lives in model/ and training/,
scikit-learn in evaluation/ and in the PQ codec's encoder (imported when it encodes).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import edge_runtime
import firmware_bridge

SERVING_PACKAGES = ("api", "services", "inference", "replay", "storage")
SERVING_MODULES = ("settings", "camera", "server", "cli", "data_layout", "atomic", "dataset",
                   "systemd", "workers.train_worker")
HEAVY = ("torch", "sklearn", "scipy")


def serving_modules() -> list[str]:
    names = [f"edge_runtime.{m}" for m in SERVING_MODULES]
    for package in SERVING_PACKAGES:
        path = [f"{edge_runtime.__path__[0]}/{package.replace('.', '/')}"]
        names.append(f"edge_runtime.{package}")
        names += [m.name for m in pkgutil.walk_packages(path, f"edge_runtime.{package}.")]
    names += [m.name for m in pkgutil.walk_packages(firmware_bridge.__path__,
                                                    "firmware_bridge.")]
    return sorted(names)


def test_every_serving_module_imports_without_torch_or_sklearn():
    modules = serving_modules()
    assert "edge_runtime.api.app" in modules and "edge_runtime.inference.inferencer" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == [], f"serving modules pulled in {done.stdout}"


def test_the_torch_side_is_where_the_boundary_says():
    """The check above must be able to fail: model/ does import torch."""
    code = "import edge_runtime.model.torch_model, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "True"
