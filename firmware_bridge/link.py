"""The serial port: a reader thread, and reconnect with backoff when the port vanishes.

Any pyserial URL works: a device path (/dev/ttyACM0, or a udev symlink), a pty, or
``loop://`` for tests. A USB unplug shows up as a read/write error; the link then closes,
reports "down", and keeps reopening the same path (backoff up to ``max_backoff``) until the
board is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import serial

log = logging.getLogger("firmware_bridge.link")

try:  # termios.error (e.g. tcdrain on a vanished pty) is not an OSError
    import termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (termios.error,)
except ImportError:  # pragma: no cover - not POSIX
    _TERMIOS_ERRORS = ()
# TypeError/AttributeError: the reader closed the port under a concurrent writer (unplug)
PORT_ERRORS = (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS)


class SerialLink:
    def __init__(
        self,
        url: str,
        on_bytes: Callable[[bytes], None],
        baudrate: int = 115200,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.url, self.baudrate = url, baudrate
        self.on_bytes, self.on_state = on_bytes, on_state
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._port: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-reader", daemon=True)
        self.state = "down"
        self.reconnects = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._drop()
        self._thread.join(timeout=2)

    def write(self, data: bytes) -> bool:
        """Send bytes; False (and a reconnect) when the port is gone."""
        port = self._port
        if port is None:
            return False
        try:
            with self._write_lock:
                port.write(data)
                port.flush()
            return True
        except PORT_ERRORS as exc:
            self._fail(exc)
            return False

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state:
                self.on_state(state)

    def _open(self) -> serial.SerialBase:
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05,
                                     write_timeout=1.0)
        if hasattr(port, "reset_input_buffer"):
            port.reset_input_buffer()
        return port

    def _fail(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._drop()

    def _drop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):  # closing a dead port may fail any way
                port.close()
        self._set_state("down")

    def _run(self) -> None:
        backoff = self.min_backoff
        opened_before = False
        while not self._stop.is_set():
            if self._port is None:
                try:
                    self._port = self._open()
                except (serial.SerialException, OSError, ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.min_backoff
                self.reconnects += opened_before
                opened_before = True
                self._set_state("up")
                log.info("serial link up on %s", self.url)
            try:
                data = self._port.read(max(1, getattr(self._port, "in_waiting", 0) or 1))
            except PORT_ERRORS as exc:
                log.warning("serial link lost: %s", exc)
                self._fail(exc)
                continue
            if data:
                self.on_bytes(data)
            elif self._pty_hung_up():
                self._fail(OSError("device end closed"))

    def _pty_hung_up(self) -> bool:
        """A pty whose other end closed reads empty forever on some kernels: detect it."""
        port = self._port
        fd = getattr(port, "fd", None)
        if fd is None:
            return False
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return any(event & (select.POLLHUP | select.POLLERR) for _, event in poller.poll(0))

