"""Hostile and unusual input against a real daemon (issue 10, items 4-6, 12, 13): the event
loop keeps answering, decoding is bounded, 16-bit and EXIF-rotated images are seen as a
viewer shows them, and bad input gets a 4xx, never a 500."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from edge_runtime.daemon_process import Daemon, WatchdogListener


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_of_zeros(width: int, height: int, bit_depth: int, color_type: int,
                 channels: int) -> bytes:
    """A valid PNG of black pixels, made row by row: tiny on disk, huge when decoded."""
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def png_bomb_header(width: int, height: int) -> bytes:
    """Only the header of a 30000x30000 PNG: enough for Pillow to refuse it at open."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _png_chunk(b"IEND", b""))


def large_png(side: int, seed: int = 0) -> bytes:
    """A ramp with stripes and sparse noise: a few hundred KB of PNG, megapixels of image."""
    rng = np.random.default_rng(seed)
    rows = np.arange(side)[:, None]
    pixels = np.linspace(0, 250, side, dtype=np.float32)[None, :] + (rows * 7) % 13
    pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    pixels[::8, ::8] += rng.integers(0, 5, (len(range(0, side, 8)),) * 2 + (3,))
    return _encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "PNG")


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _post_inspect(client: httpx.Client, product: str, data: bytes, name: str = "x.png"):
    return client.post("/inspect", data={"product": product},
                       files={"file": (name, data, "application/octet-stream")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A daemon whose live model knows bottle (a short real job), with a watchdog socket."""
    root = tmp_path_factory.mktemp("input")
    pings = WatchdogListener(root / "notify.sock")
    daemon = Daemon(root / "data", env={"NOTIFY_SOCKET": str(pings.path),
                                        "WATCHDOG_USEC": "1000000"})  # a ping each 0.5 s
    daemon.start()
    product = daemon.client.post("/products", json={"name": "bottle"}).json()
    images = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:8]
    assert daemon.upload(product["id"], images).status_code == 201
    job = daemon.train(product["id"])
    assert job["status"] == "succeeded", job
    daemon.product_id = product["id"]
    daemon.pings = pings
    yield daemon
    daemon.stop()
    pings.close()


# ---- item 4: uploads never block the event loop or the watchdog ---------------------------
def test_a_big_upload_leaves_health_and_the_watchdog_answering(trained, tmp_path):
    data = large_png(2400)  # ~0.5 MB that decodes to 17 MB, like a big camera frame
    files = [("files", (f"{i}.png", data, "image/png")) for i in range(32)]
    gaps: list[float] = []
    stop = threading.Event()

    def health() -> None:
        with httpx.Client(base_url=trained.url, timeout=30) as client:
            last = time.monotonic()
            while not stop.is_set():
                assert client.get("/health").status_code == 200
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                time.sleep(0.02)

    poller = threading.Thread(target=health)
    poller.start()
    time.sleep(1.0)
    started = time.monotonic()
    upload = trained.client.post(f"/products/{trained.product_id}/captures", files=files)
    took = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    poller.join()
    assert upload.status_code == 201 and upload.json()["count"] == 32, upload.text
    assert took > 1.0, "the upload was too quick to show anything"
    assert max(gaps) < 1.0, f"/health was blocked for {max(gaps):.2f} s"
    pings = [t for t in trained.pings.times if t >= started - 0.6]
    ping_gaps = np.diff(pings + [time.monotonic()])
    assert len(pings) >= took / 0.5 and max(ping_gaps) < 1.0, ping_gaps


# ---- item 5: decoding is bounded -----------------------------------------------------------
def test_a_decompression_bomb_is_refused_not_a_500(trained):
    bomb = png_bomb_header(30000, 30000)
    inspected = _post_inspect(trained.client, "bottle", bomb)
    assert inspected.status_code == 413, inspected.text
    assert "pixels" in inspected.json()["detail"]
    uploaded = trained.client.post(f"/products/{trained.product_id}/captures",
                                   files=[("files", ("b.png", bomb, "image/png"))])
    assert uploaded.status_code == 413


def test_parallel_huge_16_bit_pngs_keep_memory_low(trained):
    huge = png_of_zeros(6300, 6300, 16, 6, 4)  # 16-bit RGBA: ~300 MB decoded
    assert len(huge) < 1_500_000
    process = psutil.Process(trained.process.pid)
    before = process.memory_info().rss
    peak = before

    def send(results: list) -> None:
        with httpx.Client(base_url=trained.url, timeout=120) as client:
            results.append(_post_inspect(client, "bottle", huge))

    results: list[httpx.Response] = []
    senders = [threading.Thread(target=send, args=(results,)) for _ in range(8)]
    for sender in senders:
        sender.start()
    while any(s.is_alive() for s in senders):
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.02)
    assert [r.status_code for r in results] == [413] * 8, results[0].text
    assert "megapixels" in results[0].json()["detail"]
    assert (peak - before) / 2**20 < 150, f"RSS grew {(peak - before) / 2**20:.0f} MB"


def test_a_large_jpeg_decodes_reduced_and_is_inspected(trained, data_root):
    image = Image.open(data_root / "bottle" / "test" / "good" / "000.png").convert("RGB")
    big = _encode(image.resize((4000, 4000)), "JPEG", quality=90)
    result = _post_inspect(trained.client, "bottle", big, "big.jpg")
    assert result.status_code == 200, result.text


# ---- item 6: 16-bit grayscale and EXIF orientation -----------------------------------------
def _score(daemon: Daemon, data: bytes, name: str = "x.png") -> float:
    response = _post_inspect(daemon.client, "bottle", data, name)
    assert response.status_code == 200, response.text
    return response.json()["score"]


def test_16_bit_grayscale_is_scaled_not_white(trained, data_root):
    gray = np.asarray(Image.open(data_root / "bottle" / "test" / "good" / "001.png")
                      .convert("L"), dtype=np.uint16)
    eight = _encode(Image.fromarray(gray.astype(np.uint8), "L"), "PNG")
    sixteen = _encode(Image.fromarray((gray * 257).astype(np.uint16)), "PNG")
    white = _encode(Image.new("L", gray.shape[::-1], 255), "PNG")
    assert Image.open(io.BytesIO(sixteen)).mode.startswith("I")
    s8, s16, sw = _score(trained, eight), _score(trained, sixteen), _score(trained, white)
    assert abs(s16 - s8) <= 0.02 * s8, (s8, s16)
    assert abs(sw - s8) > 0.1 * s8  # a white image is a different picture to the model


def test_exif_orientation_is_honoured(trained, data_root):
    """A camera mounted sideways stores the frame rotated with an EXIF Orientation tag: the
    model must see it as a viewer shows it (exactly, for a lossless PNG)."""
    upright = Image.open(data_root / "transistor" / "test" / "good" / "000.png")
    upright = upright.convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a rotated camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
    tagged = _encode(stored, "PNG", exif=exif)
    s_up, s_tagged = _score(trained, _encode(upright, "PNG")), _score(trained, tagged)
    s_stored = _score(trained, _encode(stored, "PNG"))
    assert s_tagged == pytest.approx(s_up, rel=1e-4), (s_tagged, s_up)
    assert abs(s_stored - s_up) > 1e-3 * s_up  # orientation matters to the model
    # and a JPEG from the camera: the pixels the model gets match the upright picture
    from edge_runtime.inference.preprocess import load_rgb

    jpeg = load_rgb(_encode(stored, "JPEG", quality=95, exif=exif), 256).astype(float)
    plain = load_rgb(_encode(upright, "JPEG", quality=95), 256).astype(float)
    wrong = load_rgb(_encode(stored, "JPEG", quality=95), 256).astype(float)
    assert np.abs(jpeg - plain).mean() < 3 < np.abs(wrong - plain).mean()


# ---- items 12 and 13: the token and the HTTP contract -------------------------------------
def test_non_ascii_authorization_is_401(tmp_path):
    daemon = Daemon(tmp_path / "data", env={"EDGE_RUNTIME_API_TOKEN": "x" * 20})
    daemon.start()
    try:
        response = daemon.client.post("/products", json={"name": "a"},
                                      headers={"Authorization": "Bearer café".encode()})
        assert response.status_code == 401
    finally:
        daemon.stop()


@pytest.mark.parametrize("token", [" padded-token-0123456789", "padded-token-0123456789\n"])
def test_a_token_with_whitespace_stops_start_up(tmp_path, token):
    config = tmp_path / "config.toml"
    config.write_text(f'[api]\ntoken = "{token.encode("unicode_escape").decode()}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "data"), "--port", "1"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "api.token" in done.stderr and "whitespace" in done.stderr
    assert "Traceback" not in done.stderr


def test_input_errors_are_4xx_never_500(trained):
    c = trained.client
    superscript = _post_inspect(c, "\u00b2", b"\x89PNG\r\n\x1a\n")
    assert superscript.status_code == 404, superscript.text
    train, threshold = (f"/products/{trained.product_id}/train",
                        f"/products/{trained.product_id}/threshold")
    for method, url, body in (("POST", train, '{"epochs": NaN}'),
                              ("POST", train, '{"max_images": -Infinity}'),
                              ("PUT", threshold, '{"image": NaN}'),
                              ("PUT", threshold, '{"image": 1, "pixel": Infinity}')):
        response = c.request(method, url, content=body,
                             headers={"content-type": "application/json"})
        assert response.status_code == 422, (url, body, response.text)
        assert isinstance(response.json()["detail"], list)
    digits = c.post("/products", json={"name": "12"})
    assert digits.status_code == 422 and "pattern" in digits.text
    assert c.post("/products", json={"name": "12b"}).status_code == 201


# ---- item 11: cross-site requests and DNS rebinding ----------------------------------------
def test_cross_origin_writes_and_foreign_hosts_are_refused(tmp_path, data_root):
    daemon = Daemon(tmp_path / "data")  # loopback, no token: only the browser rules protect it
    daemon.start()
    try:
        c = daemon.client
        evil = {"Origin": "http://evil.example"}
        assert c.post("/products", json={"name": "a"}, headers=evil).status_code == 403
        text_plain = c.post("/products", content='{"name": "b"}',
                            headers=evil | {"content-type": "text/plain"})
        assert text_plain.status_code == 403
        site = {"Sec-Fetch-Site": "cross-site"}
        assert c.post("/products", json={"name": "c"}, headers=site).status_code == 403
        assert c.post("/products", json={"name": "d"},
                      headers={"Origin": "null"}).status_code == 403
        own = {"Origin": daemon.url}
        product = c.post("/products", json={"name": "mine"}, headers=own)
        assert product.status_code == 201, product.text
        assert c.post("/products", json={"name": "curl"}).status_code == 201  # no Origin
        image = (data_root / "bottle" / "train" / "good" / "000.png").read_bytes()
        upload = c.post(f"/products/{product.json()['id']}/captures", headers=evil,
                        files=[("files", ("g.png", image, "image/png"))])
        assert upload.status_code == 403
        assert not list((tmp_path / "data" / "captures").rglob("*.png"))
        names = [p["name"] for p in c.get("/products", headers=evil).json()]
        assert names == ["mine", "curl"]  # reads from anywhere are fine; writes were refused
        rebound = c.get("/status", headers={"Host": f"attacker.example:{daemon.port}"})
        assert rebound.status_code == 400 and "allowed_hosts" in rebound.json()["detail"]
        assert c.get("/status", headers={"Host": f"localhost:{daemon.port}"}).status_code == 200
    finally:
        daemon.stop()
