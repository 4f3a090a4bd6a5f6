"""A real Mosquitto broker for the tests: its own config on free loopback ports, optional
password file and TLS listener (CA and certificates made here with openssl), persistence so
a subscriber's session survives a broker restart; plus a deduplicating test subscriber."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_runtime.daemon_process import free_port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=edge-runtime test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt",
                 cwd=directory)
    d = directory
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key")


class Mosquitto:
    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 pki: Pki | None = None) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if pki else None
        self.users, self.pki = users or {}, pki
        self.process: subprocess.Popen | None = None
        self.config = self._write_config()

    def _write_config(self) -> Path:
        lines = ["per_listener_settings false", "persistence true",
                 f"persistence_location {self.dir}/", "autosave_interval 1",
                 f"log_dest file {self.dir}/mosquitto.log", "log_type all",
                 f"allow_anonymous {'false' if self.users else 'true'}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who can't read tmp dirs
        if self.users:
            passwd = self.dir / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password],
                               check=True, capture_output=True)
            lines.append(f"password_file {passwd}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.pki:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.pki.ca}",
                      f"certfile {self.pki.server_cert}", f"keyfile {self.pki.server_key}",
                      "require_certificate true"]
        path = self.dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.dir / "mosquitto.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A persistent-session QoS 1 subscriber that keeps every message and the unique ones."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str = "test-subscriber",
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[dict] = []  # every delivery, duplicates included
        self.unique: dict[str, dict] = {}  # msg_id -> first delivery, in arrival order
        self.received_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscriber never subscribed")

    def _on_message(self, client, userdata, message) -> None:
        payload = json.loads(message.payload)
        payload["_topic"], payload["_retain"] = message.topic, bool(message.retain)
        with self._lock:
            self.messages.append(payload)
            if payload["msg_id"] not in self.unique:
                self.unique[payload["msg_id"]] = payload
                self.received_at[payload["msg_id"]] = time.time()

    def wait_for(self, count: int, timeout: float = 30, kind: str | None = None) -> list[dict]:
        """The unique messages (of schema ``kind`` when given) once ``count`` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.unique.values() if kind in (None, m["schema"])]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
