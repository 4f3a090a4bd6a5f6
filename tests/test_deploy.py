"""systemd integration (sd_notify, unit file) and the installer, in a staging tree."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from edge_runtime.daemon_process import Daemon

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
