"""Camera sources behind one small interface. A failing camera raises CameraError, which
the API reports (503 and /status); it never takes the daemon down.

Each source gives ``capture_array()``, an RGB array (H x W x 3, uint8) that goes straight to
inference (no encode/decode round trip), and ``capture()``, encoded bytes for captures that
are stored as training images. Sources: none, directory, picamera2 (Raspberry Pi), v4l2
(USB/UVC and other V4L2 cameras, through linuxpy: pure Python, no OpenCV) and gstreamer (a
``gst-launch-1.0`` pipeline: a Jetson's CSI camera). v4l2 and gstreamer read frames on a
thread and keep only the newest, so a capture is never a stale frame from a full queue.
"""

from __future__ import annotations

import io
import itertools
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime.dataset import IMAGE_SUFFIXES

FRAME_TIMEOUT_S = 5.0  # a camera that delivers nothing for this long is reported as failed
# BT.601 limited range, what UVC cameras send as YUYV
_Y, _RV, _GU, _GV, _BU = 1.164, 1.596, 0.392, 0.813, 2.017


class CameraError(RuntimeError):
    """The camera could not deliver a frame."""


class CameraNotConfiguredError(CameraError):
    """Frames were asked of a daemon that has no camera (a client error, HTTP 409)."""


class Camera(Protocol):
    name: str

    def capture(self) -> bytes:
        """One frame, encoded as PNG or JPEG (stored captures)."""
        ...

    def capture_array(self) -> np.ndarray:
        """One frame as uint8 RGB (H, W, 3), for inference."""
        ...


def _decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise CameraError(f"{what}: cannot decode: {exc}") from exc


def _encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {"compress_level": 1}
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


class NoCamera:
    name = "none"

    def capture(self) -> bytes:
        return self.capture_array()

    def capture_array(self) -> np.ndarray:
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

    def capture_array(self) -> np.ndarray:
        return _decode(self.capture(), "camera directory")


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

    def capture_array(self) -> np.ndarray:
        """The camera's array as it comes, for inference: no JPEG encode and decode."""
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
        return np.ascontiguousarray(frame[..., :3])

    def capture(self) -> bytes:
        """JPEG (quality 95): stills are large, and these become training images."""
        return _encode(self.capture_array(), "JPEG")


def rgb_from_frame(data: bytes, pixel_format: str, width: int, height: int,
                   bytes_per_line: int = 0) -> np.ndarray:
    """One raw frame as RGB; ``bytes_per_line`` is the driver's stride (rows may be padded)."""
    fourcc = pixel_format.upper()
    if fourcc in ("MJPG", "JPEG"):
        return _decode(data, f"corrupt {fourcc} frame")
    channels = {"YUYV": 2, "RGB3": 3, "BGR3": 3, "GREY": 1}.get(fourcc)
    if channels is None:
        raise CameraError(f"pixel format {pixel_format!r} is not supported "
                          "(MJPG, YUYV, RGB3, BGR3, GREY)")
    stride = bytes_per_line or width * channels
    if len(data) < stride * (height - 1) + width * channels:
        raise CameraError(f"short {fourcc} frame: {len(data)} bytes for {width}x{height}")
    flat = np.frombuffer(data, np.uint8)
    if flat.size < stride * height:  # the last row's padding may be missing
        flat = np.pad(flat, (0, stride * height - flat.size))
    pixels = flat[: stride * height].reshape(height, stride)[:, : width * channels]
    if fourcc == "YUYV":
        return _yuyv_to_rgb(pixels, width)
    if fourcc == "GREY":
        return np.repeat(pixels[..., None], 3, axis=2)
    rgb = pixels.reshape(height, width, 3)
    return np.ascontiguousarray(rgb[..., ::-1] if fourcc == "BGR3" else rgb)


def _yuyv_to_rgb(pixels: np.ndarray, width: int) -> np.ndarray:
    """Y0 U Y1 V: two pixels share one chroma pair (4:2:2)."""
    y = pixels[:, 0::2].astype(np.float32) - 16.0
    u = np.repeat(pixels[:, 1::4].astype(np.float32) - 128.0, 2, axis=1)[:, :width]
    v = np.repeat(pixels[:, 3::4].astype(np.float32) - 128.0, 2, axis=1)[:, :width]
    y *= _Y
    rgb = np.stack([y + _RV * v, y - _GU * u - _GV * v, y + _BU * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@dataclass
class _Frame:
    rgb: Callable[[], np.ndarray]  # decoding is deferred: most frames are never captured
    arrived: float


class _LatestFrameSource:
    """A reader thread keeps the newest frame; capture waits for one newer than the call."""

    name = "camera"

    def __init__(self, timeout: float = FRAME_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._frame: _Frame | None = None
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _frames(self) -> Iterator[Callable[[], np.ndarray]]:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            for frame in self._frames():
                with self._cond:
                    self._frame = _Frame(frame, time.monotonic())
                    self._cond.notify_all()
                if self._stop.is_set():
                    return
            error = f"{self.name} camera stream ended"
        except CameraError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - driver errors come in many types
            error = f"{self.name} camera failed: {exc}"
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _ensure_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._error, self._frame = None, None
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}",
                                            daemon=True)
            self._thread.start()

    def capture_array(self) -> np.ndarray:
        """The first frame that arrives after this call, as RGB."""
        asked = time.monotonic()
        with self._cond:
            self._ensure_running()
            fresh = self._cond.wait_for(
                lambda: self._error is not None
                or (self._frame is not None and self._frame.arrived >= asked), self.timeout)
            if self._error is not None:
                error, self._thread = self._error, None  # the next capture reopens
                raise CameraError(error)
            if not fresh:
                raise CameraError(f"{self.name} camera: no frame within {self.timeout:.0f} s")
            frame = self._frame
        return frame.rgb()

    def capture(self) -> bytes:
        """PNG: lossless, and these frames are small."""
        return _encode(self.capture_array())

    def close(self) -> None:
        self._stop.set()


class V4L2Camera(_LatestFrameSource):
    """A V4L2 device (USB/UVC webcam, many CSI drivers); linuxpy is imported on first use."""

    name = "v4l2"
    FOURCC = {"MJPEG": "MJPG", "JPEG": "JPEG", "YUYV": "YUYV", "RGB24": "RGB3",
              "BGR24": "BGR3", "GREY": "GREY"}

    def __init__(self, device: str = "/dev/video0", width: int = 640, height: int = 480,
                 pixel_format: str = "MJPG", timeout: float = FRAME_TIMEOUT_S) -> None:
        super().__init__(timeout)
        self.device, self.width, self.height = device, width, height
        self.pixel_format = pixel_format

    def _frames(self) -> Iterator[Callable[[], np.ndarray]]:
        try:
            from linuxpy.video.device import BufferType, Device
        except ImportError as exc:
            raise CameraError("the v4l2 camera needs linuxpy "
                              "(pip install 'edge-runtime[v4l2]')") from exc
        try:
            device = Device(self.device)
            device.open()
        except OSError as exc:
            raise CameraError(f"cannot open {self.device}: {exc}") from exc
        with device:
            device.set_format(BufferType.VIDEO_CAPTURE, self.width, self.height,
                              self.pixel_format)
            for frame in device:
                fmt = frame.format
                fourcc = self.FOURCC.get(frame.pixel_format.name, frame.pixel_format.name)
                data = bytes(frame.data)
                yield lambda d=data, f=fmt, c=fourcc: rgb_from_frame(
                    d, c, f.width, f.height, f.bytes_per_line)
                if self._stop.is_set():
                    return


class GStreamerCamera(_LatestFrameSource):
    """``gst-launch-1.0 PIPELINE ! videoconvert ! videoscale ! RGB caps ! fdsink``.

    PIPELINE is the source part, e.g. for a Jetson CSI camera
    ``nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080 ! nvvidconv``.
    """

    name = "gstreamer"

    def __init__(self, pipeline: str, width: int = 640, height: int = 480,
                 timeout: float = FRAME_TIMEOUT_S, command: Sequence[str] | None = None) -> None:
        super().__init__(timeout)
        self.width, self.height = width, height
        # GStreamer pads each RGB row to a multiple of 4 bytes
        self.stride = (width * 3 + 3) // 4 * 4
        self.command = list(command) if command else [
            "gst-launch-1.0", "-q", *shlex.split(pipeline), "!", "videoconvert", "!",
            "videoscale", "!", f"video/x-raw,format=RGB,width={width},height={height}", "!",
            "fdsink", "fd=1"]
        self._process: subprocess.Popen | None = None

    def _frames(self) -> Iterator[Callable[[], np.ndarray]]:
        size = self.stride * self.height
        try:
            process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise CameraError(f"cannot start {self.command[0]}: {exc}") from exc
        self._process = process
        try:
            while not self._stop.is_set():
                data = _read_exactly(process.stdout, size)
                if data is None:
                    process.wait(5)
                    detail = process.stderr.read().decode(errors="replace").strip()
                    raise CameraError(f"gstreamer pipeline exited ({process.returncode})"
                                      + (f": {detail.splitlines()[-1]}" if detail else ""))
                yield lambda d=data: rgb_from_frame(d, "RGB3", self.width, self.height,
                                                    self.stride)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(5)

    def close(self) -> None:
        super().close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()


def _read_exactly(stream, size: int) -> bytes | None:
    """One whole frame from the pipe, or None at end of stream."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            return None
        done += got
    return bytes(buffer)


def make_camera(kind: str, directory: str = "", *, device: str = "/dev/video0",
                width: int = 640, height: int = 480, pixel_format: str = "MJPG",
                pipeline: str = "") -> Camera:
    """The source the ``camera`` settings name (``settings.camera``, validated)."""
    if kind == "directory":
        return DirectoryCamera(directory)
    if kind == "picamera2":
        return Picamera2Camera()
    if kind == "v4l2":
        return V4L2Camera(device, width, height, pixel_format)
    if kind == "gstreamer":
        return GStreamerCamera(pipeline, width, height)
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
        return self._watch(self.camera.capture)

    def capture_array(self) -> np.ndarray:
        return self._watch(self.camera.capture_array)

    def _watch(self, take: Callable):
        try:
            frame = take()
        except CameraNotConfiguredError:
            raise
        except CameraError as exc:
            self.error = str(exc)
            raise
        self.error = None
        return frame
