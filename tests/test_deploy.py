"""systemd integration (sd_notify, unit file) and the installer, in a staging tree."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge_runtime.daemon_process import Daemon

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_ready_and_watchdog_pings_reach_notify_socket(tmp_path):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.5)
    daemon = Daemon(tmp_path / "data", env={"NOTIFY_SOCKET": address,
                                            "WATCHDOG_USEC": "200000"})
    daemon.start()
    messages = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 3:
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())
    finally:
        daemon.stop()
        sock.close()
    assert messages and messages[0].startswith("READY=1")
    assert "STATUS=serving" in messages[0]
    assert sum("WATCHDOG=1" in m for m in messages) >= 3


def test_unit_file_verifies(tmp_path):
    unit = (REPO / "deploy" / "edge-runtime.service").read_text()
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "ReadWritePaths=/var/lib/edge-runtime",
                   "PrivateTmp=yes", "User=edge-runtime"):
        assert needed in unit
    analyze = shutil.which("systemd-analyze")
    if analyze:  # where systemd is available, it must accept the unit
        local = tmp_path / "edge-runtime.service"
        local.write_text(unit.replace("/opt/edge-runtime/venv/bin/edge-runtime",
                                      shutil.which("edge-runtime") or "/bin/true"))
        done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_installer_is_idempotent_and_uninstall_keeps_data(tmp_path, backbone_files):
    root = tmp_path / "root"
    env = {"EDGE_RUNTIME_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    cmd = ["bash", str(REPO / "deploy" / "install.sh"), "--no-pip", "--weights",
           str(backbone_files.config.parent)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    config = root / "etc" / "edge-runtime" / "config.toml"
    assert (root / "etc/systemd/system/edge-runtime.service").is_file()
    assert (root / "etc/udev/rules.d/99-edge-runtime.rules").is_file()
    assert (root / "var/lib/edge-runtime/weights" / backbone_files.weights.name).is_file()
    config.write_text(config.read_text().replace("port = 8765", "port = 9999"))
    first = _tree(root)
    second_run = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert "kept existing" in second_run.stdout
    assert _tree(root) == first  # running it twice changes nothing, edits survive
    (root / "var/lib/edge-runtime/state.db").write_bytes(b"precious")
    subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--uninstall"], env=env,
                   check=True, capture_output=True)
    assert not (root / "etc/systemd/system/edge-runtime.service").exists()
    assert not (root / "opt/edge-runtime").exists()
    assert (root / "var/lib/edge-runtime/state.db").read_bytes() == b"precious"
    assert "port = 9999" in config.read_text()
    subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--uninstall", "--purge"],
                   env=env, check=True, capture_output=True)
    assert not (root / "var/lib/edge-runtime").exists()


# -- installing on the boards (issue 12) ---------------------------------------------------

LOCK = REPO / "deploy" / "constraints.txt"


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and not set(version) & set("<>=,; "), line  # exact pins
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_lock_pins_every_runtime_dependency_and_torch_in_one_place():
    pins, project = _lock(), _pyproject()["project"]
    extras = project["optional-dependencies"]
    runtime = project["dependencies"] + extras["cpu"] + extras["train"] + extras["v4l2"]
    assert {_normal(d) for d in runtime} | {"torch", "mcunet"} <= set(pins)
    assert pins["torch"].endswith("+cpu")  # PyPI's build of that version pulls CUDA
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.split()
    version = pins["torch"].split("+")[0]
    holders = [name for name in tracked if name != "deploy/constraints.txt"
               and (REPO / name).is_file()
               and version in (REPO / name).read_text("utf-8", "ignore")]
    assert holders == []  # the torch pin lives in the lock only


def test_serving_install_needs_no_torch_and_one_onnxruntime():
    project = _pyproject()["project"]
    base = {_normal(d) for d in project["dependencies"]}
    assert not base & {"torch", "onnx", "scikit-learn", "scipy", "onnxruntime", "onnxruntime-gpu"}
    extras = project["optional-dependencies"]
    assert [_normal(d) for d in extras["cpu"]] == ["onnxruntime"]
    assert [_normal(d) for d in extras["gpu"]] == ["onnxruntime-gpu"]
    assert project["requires-python"] == ">=3.10"  # JetPack 6 ships Python 3.10
    assert any(d.startswith("tomli") and "python_version < '3.11'" in d
               for d in project["dependencies"])


def _fake_python(tmp_path: Path, numpy: str | None) -> Path:
    """A venv python that only answers the numpy version question (or has no numpy)."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    answer = f"echo {numpy}" if numpy else "exit 1"
    python.write_text(f'#!/bin/sh\ncase "$2" in *numpy*) {answer} ;; *) exit 1 ;; esac\n')
    python.chmod(0o755)
    return python


def _board_constraints(python: Path, ort: str = "onnxruntime") -> list[str]:
    done = subprocess.run([str(REPO / "deploy" / "board_constraints.sh"), str(python), str(LOCK),
                           ort], check=True, capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


def test_board_keeps_the_os_numpy_major_for_picamera2(tmp_path):
    pi = _board_constraints(_fake_python(tmp_path / "pi", "1.24.2"))
    assert "numpy>=1.24.2,<2" in pi and not any(line.startswith("numpy==") for line in pi)
    lock = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert _board_constraints(_fake_python(tmp_path / "trixie", "2.2.4")) == lock
    assert _board_constraints(_fake_python(tmp_path / "plain", None)) == lock
    jetson = _board_constraints(_fake_python(tmp_path / "jetson", None), "onnxruntime-gpu")
    assert not any(line.startswith("onnxruntime==") for line in jetson)


def test_torch_sources(tmp_path):
    script = str(REPO / "deploy" / "install_torch.sh")
    venv = _fake_python(tmp_path, None).parents[1]  # its python cannot import torch
    none = subprocess.run([script, str(venv), "none"], capture_output=True, text=True)
    assert none.returncode == 0 and "serving only" in none.stdout
    system = subprocess.run([script, str(venv), "system"], capture_output=True, text=True)
    assert system.returncode == 1 and "the OS has no torch" in system.stderr
    bad = subprocess.run([script, str(venv), "cuda"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown torch source" in bad.stderr
    ort = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--ort", "onnxruntime-cpu"],
                         env={"EDGE_RUNTIME_ROOT": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert ort.returncode == 2 and "--ort must be" in ort.stderr
