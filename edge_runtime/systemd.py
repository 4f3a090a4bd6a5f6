"""sd_notify over the NOTIFY_SOCKET datagram socket (no libsystemd needed): READY=1 once
the model is loaded, WATCHDOG=1 from a task on the serving event loop, so a hung loop
stops the pings and systemd restarts the service."""

from __future__ import annotations

import asyncio
import os
import socket


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self.address = address
        self.interval = watchdog_usec / 2e6 if watchdog_usec else None
        self.pings = 0

    @classmethod
    def from_environment(cls) -> Notifier:
        usec = os.environ.get("WATCHDOG_USEC")
        return cls(os.environ.get("NOTIFY_SOCKET"), int(usec) if usec and usec.isdigit() else None)

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a reader that stopped reading must not stall the loop
            try:
                sock.sendto(message.encode(), address)
            except OSError:
                return False
        return True

    def ready(self, model_version: str | None) -> None:
        self.send(f"READY=1\nSTATUS=serving, model {model_version or 'none yet'}")

    async def watchdog(self) -> None:
        """Run on the serving loop: pings stop when the loop stops answering."""
        if not self.interval:
            return
        while True:
            if self.send("WATCHDOG=1"):
                self.pings += 1
            await asyncio.sleep(self.interval)

    def stopping(self) -> None:
        self.send("STOPPING=1")
