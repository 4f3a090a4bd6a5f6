"""Camera sources behind one small interface. A failing camera raises CameraError, which
the API reports (503 and /status); it never takes the daemon down."""

from __future__ import annotations

import io
import itertools
import threading
import time
from pathlib import Path
from typing import Protocol

from edge_runtime.dataset import IMAGE_SUFFIXES


class CameraError(RuntimeError):
    """The camera could not deliver a frame."""


class CameraNotConfiguredError(CameraError):
    """Frames were asked of a daemon that has no camera (a client error, HTTP 409)."""


class Camera(Protocol):
    name: str

    def capture(self) -> bytes:
        """One frame, encoded as PNG or JPEG."""
        ...


class NoCamera:
    name = "none"

    def capture(self) -> bytes:
        raise CameraNotConfiguredError(
            "no camera is configured (camera.kind = none); upload images instead")


class DirectoryCamera:
    """Replays image files in name order, forever: for tests, demos and line replays."""

    name = "directory"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._cycle = None

    def capture(self) -> bytes:
        with self._lock:
            if self._cycle is None:
                files = sorted(p for p in self.directory.glob("*")
                               if p.suffix.lower() in IMAGE_SUFFIXES) \
                    if self.directory.is_dir() else []
                if not files:
                    raise CameraError(f"camera directory {self.directory} has no images")
                self._cycle = itertools.cycle(files)
            path = next(self._cycle)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CameraError(f"cannot read {path}: {exc}") from exc


class Picamera2Camera:
    """Raspberry Pi camera; picamera2 is imported only when this source is chosen."""

    name = "picamera2"

    def __init__(self) -> None:
        self._camera = None
        self._lock = threading.Lock()

    def _open(self):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError("picamera2 is not installed (apt install python3-picamera2, "
                              "or pip install 'edge-runtime[camera]')") from exc
        camera = Picamera2()
        camera.configure(camera.create_still_configuration())
        camera.start()
        time.sleep(0.5)  # auto-exposure settles
        return camera

    def capture(self) -> bytes:
        from PIL import Image

        with self._lock:
            try:
                if self._camera is None:
                    self._camera = self._open()
                frame = self._camera.capture_array()
            except CameraError:
                raise
            except Exception as exc:  # noqa: BLE001 - driver errors come in many types
                self._camera = None
                raise CameraError(f"picamera2 failed: {exc}") from exc
        buffer = io.BytesIO()
        Image.fromarray(frame[..., :3]).save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()


def make_camera(kind: str, directory: str = "") -> Camera:
    if kind == "directory":
        return DirectoryCamera(directory)
    if kind == "picamera2":
        return Picamera2Camera()
    return NoCamera()


class MonitoredCamera:
    """A camera that remembers its last failure, for /status; cleared by the next frame."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.error: str | None = None

    @property
    def name(self) -> str:
        return self.camera.name

    def capture(self) -> bytes:
        try:
            frame = self.camera.capture()
        except CameraNotConfiguredError:
            raise
        except CameraError as exc:
            self.error = str(exc)
            raise
        self.error = None
        return frame
