"""One Settings object from one TOML file, with EDGE_RUNTIME_<SECTION>_<KEY> overrides,
validated at start-up with a message that names the offending key."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_runtime.data_layout import DataLayout
from edge_runtime.events.config import (
    EventConfigError,
    MqttSettings,
    WebhookSettings,
    validate_mqtt,
    validate_webhook,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Jetson, JetPack 6): the same parser from PyPI
    import tomli as tomllib

ENV_PREFIX = "EDGE_RUNTIME_"
WEIGHTS_ENV = "EDGE_RUNTIME_WEIGHTS_DIR"  # read by model/weights.py, the one resolution path
# the replay codecs of trunk features (replay/codecs: a test keeps the two lists equal);
# named here so that validating settings does not import the codecs
REPLAY_FEATURE_CODECS = ("fp32", "fp16", "uint8_map", "uint8_channel", "pq", "pca")
CAMERA_KINDS = ("none", "directory", "picamera2", "v4l2", "gstreamer")
V4L2_PIXEL_FORMATS = ("MJPG", "YUYV", "RGB3", "BGR3", "GREY")
HEAD_KINDS = ("padim", "patchcore")  # inference/heads.py KINDS (a test keeps them equal)
HEAD_COVARIANCES = ("full", "shared", "diagonal")
HEAD_SERVE = ("auto", "student", "head")
REPLAY_SELECTIONS = ("random", "kcenter")  # replay/selection.py (a test keeps them equal)


class SettingsError(ValueError):
    """The configuration cannot run; the message says which key and why."""


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""  # bearer token for mutating endpoints; required off loopback
    max_upload_mb: float = 10.0
    decode_slots: int = 2  # images decoded at once (each up to 24 MP / 96 MB decoded)
    # Host names the API answers to (DNS rebinding), comma separated, besides loopback names
    # and api.host; "*" accepts any
    allowed_hosts: str = ""


@dataclass(frozen=True)
class ModelSettings:
    weights_dir: str = ""  # empty: EDGE_RUNTIME_WEIGHTS_DIR, then ~/.torch/mcunet, then download
    # ORT intra-op threads per inspection: with spinning off one thread is as fast as two
    # (benchmarks/latency.py), and two inspections then run at once on a 2-core board
    threads: int = 1
    spinning: bool = False
    # ONNX Runtime execution providers, in order of preference, checked at start-up against
    # onnxruntime.get_available_providers(); a Jetson with onnxruntime-gpu:
    # ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class TrainingSettings:
    recipe: str = "new"  # "new" (validated schedule, map, calibration) or "paper"
    epochs: int = 10  # the paper recipe's epochs; a job may still ask for fixed epochs
    min_captures: int = 4
    max_images: int = 200
    threads: int = 1  # torch threads of the worker: leave a core for inspections
    seed: int = 0
    # recompute student blocks in backward (-170 MB peak, ~25% slower steps) and run the
    # teacher each step instead of holding its outputs (same epoch time, ~40 MB less)
    low_memory: bool = True
    # the worker's malloc: tcmalloc (libtcmalloc-minimal4) keeps ~100 MB less of a step's
    # freed activations than glibc's, at the same speed; "system": glibc's
    allocator: str = "tcmalloc"


@dataclass(frozen=True)
class ReplaySettings:
    """The replay memory of earlier products (replay/store.py): a byte budget shared
    equally by products, filled with as many samples as the codec fits."""

    # codec of the stored trunk features: PQ forgot least at equal bytes in the budget sweep
    # (benchmarks/continual.py --replay-bytes; notes of issue 17)
    codec: str = "pq"
    budget_bytes: int = 2_476_800  # payload + scales + codebooks, all products together
    samples: int = 0  # optional cap on samples (all products); 0: the budget alone decides
    # which samples a product keeps: random | kcenter (k-center forgot less at small shares)
    selection: str = "kcenter"


@dataclass(frozen=True)
class CameraSettings:
    kind: str = "none"  # none | directory | picamera2 | v4l2 | gstreamer
    directory: str = ""
    device: str = "/dev/video0"  # v4l2: USB/UVC and other V4L2 cameras
    width: int = 640  # v4l2 and gstreamer frame size
    height: int = 480
    pixel_format: str = "MJPG"  # v4l2: MJPG | YUYV | RGB3 | BGR3 | GREY
    pipeline: str = ""  # gstreamer: the source part, e.g. "nvarguscamerasrc ! nvvidconv"


@dataclass(frozen=True)
class SerialSettings:
    url: str = ""  # e.g. /dev/edge-line (udev symlink); empty: no serial bridge
    baudrate: int = 115200
    deadline_ms: float = 200.0
    failsafe: str = "reject"  # verdict sent when an inspection misses its deadline
    heartbeat_s: float = 1.0


@dataclass(frozen=True)
class InspectionSettings:
    keep_recent_maps: int = 16  # anomaly maps kept in RAM for GET .../map.png (~330 KB each)
    keep_records: int = 100_000  # inspection rows kept in SQLite (newest)
    # disk budget for the maps of rejects and reviewed parts (kept longer than the RAM ones)
    keep_maps_mb: float = 200.0


@dataclass(frozen=True)
class HeadSettings:
    """Memory-bank heads: a product is inspected from its captures before its student is
    trained (edge_runtime/inference/heads.py; benchmarks/onboarding.py chose padim/full),
    and afterwards when it detects better than the student (``serve``)."""

    enabled: bool = True
    kind: str = "padim"  # padim | patchcore
    covariance: str = "full"  # padim: full | shared | diagonal
    max_bytes: int = 5_500_000  # per product, the head file; the fit narrows to fit
    # the head's input side (inference/heads.py IMAGE_SIZE): finer than the student's 256,
    # within the student graph's MACs
    image_size: int = 288
    auto_fit: bool = True  # fit after captures are stored (else POST /products/{id}/head)
    # a trained product: "auto" chooses per product and model version between the student
    # and the head on synthetic defects made from its held-out captures
    # (evaluation/serving_choice.py); "student" or "head" pins one (the head when ready)
    serve: str = "auto"


@dataclass(frozen=True)
class Settings:
    data_dir: str = "~/.local/share/edge-runtime"
    api: ApiSettings = field(default_factory=ApiSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    serial: SerialSettings = field(default_factory=SerialSettings)
    inspection: InspectionSettings = field(default_factory=InspectionSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)  # events to a broker
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    heads: HeadSettings = field(default_factory=HeadSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_path)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The inverse of to_json, validated (how the training worker receives them)."""
        return validate(apply_values(cls(), json.loads(text)))

    @property
    def is_loopback(self) -> bool:
        if self.api.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.api.host).is_loopback
        except ValueError:
            return False


def _coerce(value: Any, target: Any, key: str) -> Any:
    kind = type(target)
    if kind is tuple:  # a list of names: a TOML array, or "a,b" from the environment
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise SettingsError(f"{key}: expected a list of names, got {value!r}")
        return tuple(item.strip() for item in items if item.strip())
    if isinstance(value, str) and kind is not str:
        if kind is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingsError(f"{key}: expected true/false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        try:
            return kind(value)
        except ValueError as exc:
            raise SettingsError(f"{key}: expected {kind.__name__}, got {value!r}") from exc
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def apply_values(section: Any, values: dict, prefix: str = "") -> Any:
    """``section`` with ``values`` (nested dicts) applied, each checked against its type."""
    known = {f.name: f for f in fields(section)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise SettingsError(f"unknown setting {prefix}{key}")
        current = getattr(section, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise SettingsError(f"{prefix}{key} must be a table")
            changes[key] = apply_values(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, current, f"{prefix}{key}")
    return replace(section, **changes)


def _env_overrides(environ: dict[str, str]) -> dict:
    """EDGE_RUNTIME_API_PORT=9000 -> {"api": {"port": "9000"}}; EDGE_RUNTIME_DATA_DIR too."""
    out: dict = {}
    sections = {f.name for f in fields(Settings) if f.name != "data_dir"}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == WEIGHTS_ENV:
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key == "data_dir":
            out["data_dir"] = value
            continue
        section, _, rest = key.partition("_")
        if section in sections and rest:
            out.setdefault(section, {})[rest] = value
    return out


def validate(settings: Settings) -> Settings:
    checks = [
        (1 <= settings.api.port <= 65535, "api.port must be 1..65535"),
        (settings.api.max_upload_mb > 0, "api.max_upload_mb must be positive"),
        (1 <= settings.api.decode_slots <= 64, "api.decode_slots must be 1..64"),
        (settings.api.token == settings.api.token.strip(),
         "api.token has leading or trailing whitespace: no client could ever send it"),
        (settings.api.token.isascii() and settings.api.token.isprintable(),
         "api.token must be printable ASCII (it travels in an HTTP header)"),
        (settings.model.threads >= 0, "model.threads must be >= 0"),
        (settings.training.epochs >= 1, "training.epochs must be >= 1"),
        (settings.training.recipe in ("new", "paper"), "training.recipe must be new or paper"),
        (settings.training.allocator in ("tcmalloc", "system"),
         "training.allocator must be tcmalloc or system"),
        (settings.replay.codec in REPLAY_FEATURE_CODECS,
         f"replay.codec must be one of {', '.join(REPLAY_FEATURE_CODECS)}"),
        (settings.replay.budget_bytes >= 1, "replay.budget_bytes must be >= 1"),
        (settings.replay.samples >= 0, "replay.samples must be >= 0 (0: no sample cap)"),
        (settings.replay.selection in REPLAY_SELECTIONS,
         f"replay.selection must be one of {', '.join(REPLAY_SELECTIONS)}"),
        (settings.training.min_captures >= 2, "training.min_captures must be >= 2"),
        (settings.camera.kind in CAMERA_KINDS,
         f"camera.kind must be one of {', '.join(CAMERA_KINDS)}"),
        (settings.camera.kind != "directory" or bool(settings.camera.directory),
         "camera.directory is required when camera.kind = directory"),
        (settings.camera.kind != "gstreamer" or bool(settings.camera.pipeline.strip()),
         "camera.pipeline is required when camera.kind = gstreamer"),
        (settings.camera.width > 0 and settings.camera.height > 0,
         "camera.width and camera.height must be positive"),
        (settings.camera.pixel_format in V4L2_PIXEL_FORMATS,
         f"camera.pixel_format must be one of {', '.join(V4L2_PIXEL_FORMATS)}"),
        (settings.serial.failsafe in ("reject", "pass"), "serial.failsafe must be reject or pass"),
        (settings.serial.deadline_ms > 0, "serial.deadline_ms must be positive"),
        (settings.serial.heartbeat_s > 0, "serial.heartbeat_s must be positive"),
        (settings.inspection.keep_recent_maps >= 0, "inspection.keep_recent_maps must be >= 0"),
        (settings.inspection.keep_records >= 1000, "inspection.keep_records must be >= 1000"),
        (settings.inspection.keep_maps_mb >= 0, "inspection.keep_maps_mb must be >= 0"),
        (settings.heads.kind in HEAD_KINDS,
         f"heads.kind must be one of {', '.join(HEAD_KINDS)}"),
        (settings.heads.covariance in HEAD_COVARIANCES,
         f"heads.covariance must be one of {', '.join(HEAD_COVARIANCES)}"),
        (settings.heads.max_bytes >= 50_000, "heads.max_bytes must be >= 50000"),
        (settings.heads.image_size % 32 == 0 and 128 <= settings.heads.image_size <= 512,
         "heads.image_size must be a multiple of 32 from 128 to 512"),
        (settings.heads.serve in HEAD_SERVE,
         f"heads.serve must be one of {', '.join(HEAD_SERVE)}"),
        (settings.is_loopback or len(settings.api.token) >= 16,
         f"api.host is {settings.api.host} (not loopback): set api.token (16+ characters) "
         "so mutating endpoints need a bearer token"),
    ]
    for ok, message in checks:
        if not ok:
            raise SettingsError(message)
    try:
        validate_mqtt(settings.mqtt)
        validate_webhook(settings.webhook)
    except EventConfigError as exc:
        raise SettingsError(str(exc)) from exc
    if settings.mqtt.enabled and settings.mqtt.commands and len(settings.api.token) < 16:
        raise SettingsError("mqtt.commands needs api.token (16+ characters): every command "
                            "must carry it, as every mutating API request does")
    from edge_runtime.providers import ProviderError, check_providers

    try:
        check_providers(settings.model.providers)
    except ProviderError as exc:
        raise SettingsError(str(exc)) from exc
    return settings


# keys that moved: an operator's config (kept across upgrades) must still start the daemon
MOVED_KEYS = {("training", "codec"): ("replay", "codec"),
              ("training", "replay_samples"): ("replay", "samples")}


def _move_old_keys(values: dict, origin: str) -> dict:
    """Old keys go to their new place (with a warning), unless the new one is also set."""
    for (section, key), (new_section, new_key) in MOVED_KEYS.items():
        old = values.get(section)
        if isinstance(old, dict) and key in old:
            value = old.pop(key)
            target = values.setdefault(new_section, {})
            if isinstance(target, dict) and new_key not in target:
                target[new_key] = value
            print(f"edge-runtime: {origin}: {section}.{key} is now {new_section}.{new_key}",
                  file=sys.stderr)
    return values


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Embedded defaults <- TOML file <- environment <- explicit overrides (CLI flags)."""
    settings = Settings()
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
        settings = apply_values(settings, _move_old_keys(data, str(path)), "")
    environ = dict(os.environ if environ is None else environ)
    settings = apply_values(settings, _move_old_keys(_env_overrides(environ), "environment"), "")
    api = {k: v for k, v in overrides.items() if k in ("host", "port") and v is not None}
    if api:
        settings = replace(settings, api=apply_values(settings.api, api, "api."))
    if overrides.get("data_dir"):
        settings = replace(settings, data_dir=str(overrides["data_dir"]))
    return validate(settings)
