"""V4L2 and GStreamer camera sources: frame handling against frames recorded with GStreamer
(tests/data/frames, see README there), a real gst-launch-1.0 pipeline, a real pipe replaying
recorded frames, and the failure paths. No /dev/video device exists on the CI machines."""

from __future__ import annotations

import io
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.camera import CameraError, GStreamerCamera, V4L2Camera, rgb_from_frame

FRAMES = Path(__file__).parent / "data" / "frames"


def _bottle() -> np.ndarray:
    return np.asarray(Image.open(FRAMES / "bottle_96x72.png").convert("RGB"))


def _smpte_rgbx() -> np.ndarray:
    """The same SMPTE frame as smpte_65x48.rgb, in 4-byte pixels: no row padding."""
    raw = np.frombuffer((FRAMES / "smpte_65x48.rgbx").read_bytes(), np.uint8)
    return raw.reshape(48, 65, 4)[..., :3]


def test_yuyv_frame_from_gstreamer_matches_the_original_image():
    rgb = rgb_from_frame((FRAMES / "bottle_96x72.yuyv").read_bytes(), "YUYV", 96, 72)
    error = np.abs(rgb.astype(int) - _bottle())
    assert rgb.shape == (72, 96, 3) and rgb.dtype == np.uint8
    assert error.mean() < 1.5 and np.percentile(error, 99) <= 10  # 4:2:2 chroma only


def test_padded_rgb_rows_are_unpadded():
    data = (FRAMES / "smpte_65x48.rgb").read_bytes()  # 65 * 3 = 195 bytes, rows of 196
    assert len(data) == 196 * 48
    rgb = rgb_from_frame(data, "RGB3", 65, 48, bytes_per_line=196)
    assert np.array_equal(rgb, _smpte_rgbx())
    bgr = rgb_from_frame(np.ascontiguousarray(rgb[..., ::-1]).tobytes(), "BGR3", 65, 48)
    assert np.array_equal(bgr, rgb)


def test_mjpeg_and_grey_frames():
    buffer = io.BytesIO()
    Image.fromarray(_bottle()).save(buffer, format="JPEG", quality=95)
    rgb = rgb_from_frame(buffer.getvalue(), "MJPG", 96, 72)
    assert rgb.shape == (72, 96, 3) and np.abs(rgb.astype(int) - _bottle()).mean() < 3
    grey = rgb_from_frame(bytes(range(12)), "GREY", 4, 3)
    assert grey.shape == (3, 4, 3) and (grey[..., 0] == grey[..., 2]).all() and grey[2, 3, 1] == 11


def test_bad_frames_raise_camera_error():
    with pytest.raises(CameraError, match="short YUYV frame"):
        rgb_from_frame(b"\0" * 100, "YUYV", 96, 72)
    with pytest.raises(CameraError, match="not supported"):
        rgb_from_frame(b"\0" * 100, "NV12", 8, 8)
    with pytest.raises(CameraError, match="corrupt MJPG frame"):
        rgb_from_frame(b"not a jpeg", "MJPG", 8, 8)


def test_gstreamer_pipeline_delivers_fresh_rgb_frames():
    camera = GStreamerCamera("videotestsrc is-live=true pattern=red ! "
                             "video/x-raw,width=64,height=48,framerate=30/1", width=65, height=48)
    try:
        first = camera.capture_array()
        start = time.monotonic()
        second = camera.capture_array()
        waited = time.monotonic() - start
        png = Image.open(io.BytesIO(camera.capture()))  # for callers that store frames
    finally:
        camera.close()
    assert first.shape == second.shape == (48, 65, 3)
    assert (np.abs(second.astype(int) - [255, 0, 0]) <= 2).all()  # red, scaled to 65 wide
    assert waited < 1.0  # the next frame of a 30 fps stream, not a timeout
    assert png.format == "PNG" and png.size == (65, 48)


def test_gstreamer_source_replays_recorded_frames_through_a_pipe():
    """The reader's framing on a real pipe: padded rows, frames split across reads."""
    script = (f"import sys, time\ndata = open({str(FRAMES / 'smpte_65x48.rgb')!r}, 'rb').read()\n"
              "while True:\n    for i in range(0, len(data), 1000):\n"
              "        sys.stdout.buffer.write(data[i:i + 1000]); sys.stdout.flush()\n"
              "    time.sleep(0.01)\n")
    camera = GStreamerCamera("", width=65, height=48, command=[sys.executable, "-c", script])
    try:
        frames = [camera.capture_array() for _ in range(3)]
    finally:
        camera.close()
    assert all(np.array_equal(frame, _smpte_rgbx()) for frame in frames)


def test_broken_pipeline_and_missing_device_are_camera_errors():
    camera = GStreamerCamera("nosuchelement_edge_runtime", width=32, height=24, timeout=10)
    with pytest.raises(CameraError, match="gstreamer pipeline exited"):
        camera.capture_array()
    with pytest.raises(CameraError, match="gstreamer pipeline exited"):  # retried, not stuck
        camera.capture_array()
    quiet = GStreamerCamera("", width=8, height=8, timeout=0.5,
                            command=shlex.split(f"{sys.executable} -c 'import time; "
                                                "time.sleep(30)'"))
    with pytest.raises(CameraError, match="no frame within"):
        quiet.capture_array()
    quiet.close()
    with pytest.raises(CameraError, match="cannot open /dev/video-edge-runtime-missing"):
        V4L2Camera("/dev/video-edge-runtime-missing").capture_array()


def test_a_camera_array_is_inspected_exactly_like_the_encoded_image(bottle_model, data_root):
    """The array path (picamera2, v4l2, gstreamer) skips the encode/decode round trip and
    still gives the upload path's score: same resize, same pixels."""
    from edge_runtime.inference import model_dir as md
    from edge_runtime.inference.inferencer import AnomalyInferencer

    inferencer = AnomalyInferencer(bottle_model / md.MERGED, 256, threads=1)
    path = data_root / "bottle" / "test" / "broken_large" / "000.png"
    frame = np.asarray(Image.open(path).convert("RGB").resize((640, 480)))  # a camera's size
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    assert inferencer.predict(frame).score == inferencer.predict(buffer.getvalue()).score
    assert inferencer.load(frame).shape == (256, 256, 3)


def test_daemon_takes_captures_from_a_gstreamer_camera(tmp_path, bottle_model):
    from edge_runtime.daemon_process import Daemon

    data = tmp_path / "data"
    shutil.copytree(bottle_model, data / "models" / "v000001")
    (data / "models" / "CURRENT").write_text("v000001")
    daemon = Daemon(data, env={
        "EDGE_RUNTIME_CAMERA_KIND": "gstreamer", "EDGE_RUNTIME_CAMERA_WIDTH": "64",
        "EDGE_RUNTIME_CAMERA_HEIGHT": "48",
        "EDGE_RUNTIME_CAMERA_PIPELINE": "videotestsrc is-live=true pattern=blue ! "
                                        "video/x-raw,width=64,height=48,framerate=30/1"})
    daemon.start(timeout=60)
    try:
        product = daemon.client.post("/products", json={"name": "bottle"}).json()
        stored = daemon.client.post(f"/products/{product['id']}/captures",
                                    params={"camera_frames": 2})
        status = daemon.client.get("/status").json()
    finally:
        daemon.stop()
    assert stored.status_code == 201, stored.text
    assert stored.json()["count"] == 2
    assert status["camera"] == {"kind": "gstreamer", "error": None}
    assert status["providers"] == ["CPUExecutionProvider"]  # what ORT runs, from the setting
    assert status["platform"]["machine"] and status["torch_imported"] is False
