"""Model versions: last-good fallback, verified promotion, hot swap under load."""

from __future__ import annotations

import shutil
import threading

import pytest

from edge_runtime.inference import model_dir as md
from edge_runtime.inference.model_dir import CURRENT
from edge_runtime.services.errors import GoneError, NotFoundError
from edge_runtime.services.events import EventBus
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.metrics import Metrics
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.storage.db import Database
from edge_runtime.storage.repositories import create_product


def inspection_service(db: Database, registry: ModelRegistry, **kwargs) -> InspectionService:
    return InspectionService(db, registry, ProductService(db, registry), Metrics(), EventBus(),
                             **kwargs)


@pytest.fixture()
def registry(tmp_path, bottle_model):
    root = tmp_path / "models"
    for name in ("v000001", "v000002"):
        shutil.copytree(bottle_model, root / name)
    (root / CURRENT).write_text("v000002")
    return ModelRegistry(root, threads=1)


def test_corrupt_current_falls_back_to_last_good(registry):
    with open(registry.root / "v000002" / md.MERGED, "ab") as handle:
        handle.write(b"torn write")
    live = registry.open_last_good()
    assert live.version == "v000001"
    assert (registry.root / CURRENT).read_text() == "v000001"


def test_promotion_verifies_before_switching(registry):
    registry.open_last_good()
    (registry.root / "v000001" / md.STUDENT).unlink()
    with pytest.raises(md.ModelDirError):
        registry.promote("v000001")
    assert registry.live.version == "v000002"
    assert (registry.root / CURRENT).read_text() == "v000002"


def test_hot_swap_never_fails_an_inspection(registry, tmp_path, data_root):
    registry.open_last_good()
    db = Database(tmp_path / "state.db")
    with db.connect() as conn:
        product = create_product(conn, "bottle", "")
    service = inspection_service(db, registry, keep_recent_maps=4)
    image = (data_root / "bottle" / "test" / "good" / "000.png").read_bytes()
    errors, versions = [], set()
    stop = threading.Event()

    def inspect_forever() -> None:
        while not stop.is_set():
            try:
                versions.add(service.inspect(product, image).model_version)
            except Exception as exc:  # noqa: BLE001 - any failure is the test failing
                errors.append(exc)

    threads = [threading.Thread(target=inspect_forever) for _ in range(2)]
    for thread in threads:
        thread.start()
    for i in range(12):
        registry.promote("v000001" if i % 2 else "v000002")
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors and versions == {"v000001", "v000002"}
    assert service.latency_stats()["count"] > 0


def test_old_versions_and_inspection_records_are_pruned(registry, tmp_path, data_root):
    registry.keep_versions = 1
    registry.promote("v000002")
    assert not (registry.root / "v000001").exists() and (registry.root / "v000002").exists()
    db = Database(tmp_path / "state.db")
    with db.connect() as conn:
        product = create_product(conn, "bottle", "")
    service = inspection_service(db, registry, keep_recent_maps=2, keep_records=3)
    service.PRUNE_EVERY = 5
    image = (data_root / "bottle" / "test" / "good" / "000.png").read_bytes()
    ids = [service.inspect(product, image).id for _ in range(10)]
    with db.connect(write=False) as conn:
        kept = [row[0] for row in conn.execute("SELECT id FROM inspections ORDER BY id")]
    assert kept == ids[-3:]
    assert service.recent_map(ids[-1]).anomaly_map.shape == (256, 256)
    with pytest.raises(GoneError):  # its record is kept, its map is not
        service.recent_map(ids[-3])
    # the list says which maps still answer, so a page never asks for a gone one
    listed = {i["id"]: i["map_available"] for i in service.list(limit=10)["inspections"]}
    assert listed == {ids[-3]: False, ids[-2]: True, ids[-1]: True}
    with pytest.raises(NotFoundError):  # its record was pruned
        service.recent_map(ids[0])
