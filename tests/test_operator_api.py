"""The API the operator's page needs, against a real daemon on loopback (issue 13)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from edge_runtime.daemon_process import Daemon
from edge_runtime.inference.model_dir import CURRENT
from edge_runtime.inference.overlay import threshold_colours, verdict_overlay
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services.jobs import promotion_result
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import SCHEMA_VERSION


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, bottle_model):
    """A daemon whose data directory already holds two versions of a bottle model."""
    data = tmp_path_factory.mktemp("operator") / "data"
    for name in ("v000001", "v000002"):
        shutil.copytree(bottle_model, data / "models" / name)
    (data / "models" / CURRENT).write_text("v000002")
    d = Daemon(data)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def bottle(daemon):
    response = daemon.client.post("/products", json={"name": "bottle"})
    assert response.status_code == 201 and response.json()["trained"] is True
    return response.json()


def test_page_and_offline_docs_are_served_from_the_package(daemon):
    c = daemon.client
    page = c.get("/")
    assert page.status_code == 200 and 'id="view-line"' in page.text
    assert c.get("/ui/app.js").status_code == 200 and c.get("/ui/style.css").status_code == 200
    docs = c.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert c.get("/docs-assets/swagger-ui.css").status_code == 200
    redoc = c.get("/redoc").text
    assert "/docs-assets/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    assert c.get("/docs-assets/redoc.standalone.js").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    for path in ("/inspections", "/inspections/counts", "/inspections/{inspection_id}/review",
                 "/products/{product_id}/captures/{capture_id}/image", "/events", "/jobs",
                 "/models/{version}/promote"):
        assert path in paths, path
    assert "delete" in paths["/products/{product_id}"]
    assert "delete" in paths["/products/{product_id}/threshold"]


def test_names_are_case_insensitive_and_captures_keep_theirs(daemon, bottle, data_root):
    c = daemon.client
    clash = c.post("/products", json={"name": "BOTTLE"})
    assert clash.status_code == 409
    assert c.post("/inspect", data={"product": "Bottle"},
                  files={"file": ("a.png", b"x", "image/png")}).status_code == 422  # found
    images = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:2]
    added = daemon.upload(bottle["id"], images).json()["captures"]
    assert [a["name"] for a in added] == [p.name for p in images]
    first = added[0]["id"]
    full = c.get(f"/products/{bottle['id']}/captures/{first}/image")
    assert full.status_code == 200 and full.content == images[0].read_bytes()
    thumb = c.get(f"/products/{bottle['id']}/captures/{first}/image?thumbnail=64")
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
    assert c.delete(f"/products/{bottle['id']}/captures/{first}").status_code == 204
    assert c.get(f"/products/{bottle['id']}/captures/{first}/image").status_code == 404
    listed = c.get(f"/products/{bottle['id']}/captures").json()
    assert first not in [x["id"] for x in listed["captures"]]


def test_override_can_be_removed(daemon, bottle):
    c = daemon.client
    url = f"/products/{bottle['id']}/threshold"
    assert c.put(url, json={"image": 0.5}).json()["threshold_override"]["image"] == 0.5
    assert c.put(url, json={"image": None}).json()["threshold_override"]["image"] is None
    c.put(url, json={"image": 0.5})
    assert c.put(url, json={}).json()["threshold_override"]["image"] is None
    c.put(url, json={"image": 0.5})
    removed = c.delete(url)
    assert removed.status_code == 200 and removed.json()["threshold_override"]["image"] is None


def _events(daemon, seen: list, ready: threading.Event, stop: threading.Event) -> None:
    import httpx

    with httpx.Client(base_url=daemon.url, timeout=30) as client, \
            client.stream("GET", "/events?topics=inspection,review,model") as response:
        topic = None
        for line in response.iter_lines():
            ready.set()
            if line.startswith("event: "):
                topic = line[7:]
            elif line.startswith("data: "):
                seen.append((topic, json.loads(line[6:]), time.monotonic()))
            if stop.is_set():
                return


def test_events_list_review_and_kept_maps(daemon, bottle, data_root):
    c = daemon.client
    seen, ready, stop = [], threading.Event(), threading.Event()
    listener = threading.Thread(target=_events, args=(daemon, seen, ready, stop), daemon=True)
    listener.start()
    assert ready.wait(10)
    defect = data_root / "bottle" / "test" / "broken_large" / "000.png"
    sent = time.monotonic()
    # an override below every score makes this a reject, whatever the small model says
    c.put(f"/products/{bottle['id']}/threshold", json={"image": 1e-9})
    result = daemon.inspect("bottle", defect).json()
    assert result["verdict"] == "reject"
    deadline = time.monotonic() + 5
    while not any(t == "inspection" and e["id"] == result["id"] for t, e, _ in seen):
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
    arrived = next(at for t, e, at in seen if t == "inspection" and e["id"] == result["id"])
    assert arrived - sent < 1.0
    event = next(e for t, e, _ in seen if t == "inspection" and e["id"] == result["id"])
    assert event["map_url"] == f"/inspections/{result['id']}/map.png"

    deadline = time.monotonic() + 5
    while True:  # rejects are kept on disk, by a writer thread off the request path
        page = c.get("/inspections", params={"product_id": bottle["id"],
                                             "verdict": "reject"}).json()
        assert page["total"] >= 1 and page["inspections"][0]["id"] == result["id"]
        if page["inspections"][0]["map_kept"]:
            break
        assert time.monotonic() < deadline, page
        time.sleep(0.05)
    assert (daemon.data_dir / "maps" / f"{result['id']:012d}.npz").is_file()
    assert c.get("/inspections", params={"verdict": "pass", "product_id": bottle["id"],
                                         "since": time.time() - 60}).json()["total"] == 0
    assert c.get("/inspections", params={"verdict": "maybe"}).status_code == 422
    counts = {r["product"]: r for r in c.get("/inspections/counts").json()}
    assert counts["bottle"]["reject"] >= 1 and counts["bottle"]["reject_recent"] >= 1

    overlay = Image.open(io.BytesIO(c.get(result["map_url"]).content))
    assert overlay.size == (256, 256 + 64)

    before = c.get(f"/products/{bottle['id']}").json()["captures"]
    fine = c.post(f"/inspections/{result['id']}/review", json={"label": "fine"})
    assert fine.status_code == 200, fine.text
    assert fine.json()["captures"] == before + 1
    assert c.post(f"/inspections/{result['id']}/review",
                  json={"label": "defective"}).status_code == 422  # reviewed once
    other = daemon.inspect("bottle", defect).json()
    bad = c.post(f"/inspections/{other['id']}/review", json={"label": "defective"}).json()
    assert bad["captures"] == before + 1 and bad["example"].endswith(f"-{other['id']}.png")
    assert (daemon.data_dir / bad["example"]).is_file()
    labelled = c.get("/inspections", params={"label": "defective"}).json()
    assert [i["id"] for i in labelled["inspections"]] == [other["id"]]
    assert any(t == "review" for t, _, _ in seen)
    c.delete(f"/products/{bottle['id']}/threshold")
    stop.set()


def test_rollback_promotes_a_version_on_disk(daemon):
    c = daemon.client
    assert [v["live"] for v in c.get("/models").json()] == [True, False]
    rolled = c.post("/models/v000001/promote")
    assert rolled.status_code == 200 and rolled.json()["live"] is True
    assert c.get("/status").json()["model_version"] == "v000001"
    assert (daemon.data_dir / "models" / CURRENT).read_text() == "v000001"
    assert c.post("/models/v000009/promote").status_code == 404
    assert c.post("/models/..%2Fx/promote").status_code in (404, 422)
    assert c.post("/models/v000002/promote").json()["version"] == "v000002"


def test_product_delete_says_what_it_means(daemon, data_root):
    c = daemon.client
    made = c.post("/products", json={"name": "scrap"}).json()
    daemon.upload(made["id"], sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:4])
    capture_dir = daemon.data_dir / "captures" / str(made["id"])
    assert capture_dir.is_dir()
    head_file = daemon.data_dir / "heads" / f"{made['id']}.npz"
    deadline = time.monotonic() + 120
    while c.get(f"/products/{made['id']}/head").json()["status"] != "ready":
        assert time.monotonic() < deadline, "the head was never fitted"
        time.sleep(0.2)
    assert head_file.exists()
    gone = c.delete(f"/products/{made['id']}")
    assert gone.status_code == 200
    body = gone.json()
    assert body["in_live_model"] is False and "replay store" in body["consequences"]
    assert c.get(f"/products/{made['id']}").status_code == 404
    assert not capture_dir.exists()
    assert not head_file.exists()  # nor its head, in RAM or on disk
    assert str(made["id"]) not in c.get("/status").json()["heads"]["products"]
    assert c.delete(f"/products/{made['id']}").status_code == 404


def test_overlay_scale_is_the_verdicts_threshold():
    rgb = np.full((64, 64, 3), 90, np.uint8)
    calm = np.full((64, 64), 0.2, np.float32)  # under half the threshold: untouched
    picture = np.asarray(verdict_overlay(rgb, calm, 1.0, 0.2, "pass"))
    assert picture.shape[0] > 64 and np.array_equal(picture[:64], rgb)  # plus a legend
    colours, alpha = threshold_colours(np.array([0.9, 1.5]))
    assert alpha[0] > 0 and colours[0][1] > 100  # below the threshold: orange/yellow
    assert colours[1][0] > 150 and colours[1][1] < 30  # above it: red, never before


def test_promotion_result_reports_moved_thresholds():
    old = {"bottle": Thresholds(0.00756, 0.01, 20)}
    new = {"bottle": Thresholds(0.00314, 0.01, 20), "transistor": Thresholds(0.02, 0.03, 2)}
    result = promotion_result(old, new, "v000001", "v000002")
    assert result["threshold_changes"] == {"bottle": {"old": 0.00756, "new": 0.00314,
                                                      "ratio": round(0.00314 / 0.00756, 4)}}
    assert result["products"] == ["bottle", "transistor"]
    assert promotion_result(new, new, "v2", "v3")["threshold_changes"] == {}
    # the operator's override on bottle was set on v000001's calibration: set aside by v2
    row = {"name": "bottle", "image_threshold_override": 0.009, "pixel_threshold_override": None,
           "threshold_override_for": "student", "override_basis_image": 0.00756,
           "override_basis_pixel": 0.01}
    assert promotion_result(old, new, "v1", "v2", [row])["overrides_set_aside"] == {
        "bottle": 0.009}
    assert promotion_result(old, old, "v1", "v2", [row])["overrides_set_aside"] == {}
    # one on the head's scores, or set on a calibration already replaced: nothing new to say
    head_row = row | {"threshold_override_for": "padim"}
    stale_row = row | {"override_basis_image": 0.5}
    assert promotion_result(old, new, "v1", "v2", [head_row, stale_row])[
        "overrides_set_aside"] == {}


def test_calibration_keeps_the_held_out_scores(daemon, bottle):
    thresholds = daemon.client.get(f"/products/{bottle['id']}").json()["thresholds"]
    scores = thresholds["normal_scores"]
    assert scores and max(scores) <= thresholds["image"]  # the threshold sits above them
    assert Thresholds.from_dict(Thresholds(1.0, 2.0, 2, (0.5, 0.7)).to_dict()).normal_scores \
        == (0.5, 0.7)


def test_kept_maps_stay_within_their_disk_budget(tmp_path):
    from edge_runtime.services.map_store import MapStore, RecentMap

    rng = np.random.default_rng(0)
    recent = RecentMap(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                       rng.random((64, 64)).astype(np.float16), Thresholds(0.5, 0.6, 3),
                       0.7, "reject")
    one = MapStore(tmp_path / "probe", 10**9)
    size = (one.directory / one.save(1, recent)).stat().st_size
    store = MapStore(tmp_path / "maps", int(size * 3.5))
    for i in range(1, 8):
        store.save(i, recent)
    kept = sorted(p.name for p in store.directory.glob("*.npz"))
    assert kept == [MapStore.file_name(i) for i in (5, 6, 7)]  # the newest, within budget
    back = store.load(MapStore.file_name(7))
    assert back.verdict == "reject" and back.thresholds.image == 0.5
    assert np.array_equal(back.rgb, recent.rgb)
    assert store.load(MapStore.file_name(1)) is None
    assert store.has(7) and not store.has(1)  # what the inspection list reports as kept
    assert MapStore(tmp_path / "none", 0).save(1, recent) is None


def test_a_version_2_database_gains_the_new_columns(tmp_path):
    import sqlite3

    from edge_runtime.storage.db import Database

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE products (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
        "UNIQUE, description TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, "
        "image_threshold_override REAL, pixel_threshold_override REAL);"
        "CREATE TABLE captures (id INTEGER PRIMARY KEY AUTOINCREMENT, product_id INTEGER, "
        "file TEXT NOT NULL, source TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT "
        "NULL, bytes INTEGER NOT NULL, created_at REAL NOT NULL);"
        "INSERT INTO products (name, created_at) VALUES ('Bottle', 0), ('bottle', 0);"
        "PRAGMA user_version=2;")
    conn.close()
    db = Database(path)  # mixed-case duplicates from before stay readable
    with db.connect() as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(captures)")}
        assert "name" in columns
        assert {row[1] for row in conn.execute("PRAGMA table_info(inspections)")} >= {
            "label", "map_file"}
        assert {"threshold_override_for", "override_basis_image", "override_basis_pixel"} <= {
            row[1] for row in conn.execute("PRAGMA table_info(products)")}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_3_database_gains_the_override_columns(tmp_path):
    """A data directory of the release before overrides named their calibration (and of the
    one before they named their path): version 3, without those columns."""
    import sqlite3

    from edge_runtime.storage import db as schema

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    old = schema.SCHEMA
    for column in ("override_basis_image", "override_basis_pixel", "threshold_override_for"):
        old = "\n".join(line for line in old.splitlines() if column not in line)
    old = old.replace("pixel_threshold_override REAL,", "pixel_threshold_override REAL")
    conn.executescript(old + "PRAGMA user_version=3;")
    conn.execute("INSERT INTO products (name, created_at, image_threshold_override) "
                 "VALUES ('bottle', 0, 7.5)")
    conn.commit()
    conn.close()
    db = schema.Database(path)
    with db.connect() as conn:
        row = repo.get_product(conn, 1)
        assert row["image_threshold_override"] == 7.5 and row["override_basis_image"] is None
        repo.set_override_basis(conn, 1, 5.0, 6.0)  # what start-up does with such overrides
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    with db.connect(write=False) as conn:
        assert repo.get_product(conn, 1)["override_basis_pixel"] == 6.0
