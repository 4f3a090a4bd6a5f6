"""Products: names, the "is it trained" rule, and the thresholds that decide its verdicts."""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services.errors import NotTrainedError, ProductExistsError, found
from edge_runtime.services.models import ModelRegistry
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

SQLITE_MAX_ID = 2**63 - 1
STUDENT = "student"


def override_set_for(product: dict) -> str | None:
    """Whose scores the operator's override is on; None when there is none. Untagged (set
    before overrides were tagged): the student's, the usual case then."""
    if product["image_threshold_override"] is None and product["pixel_threshold_override"] is None:
        return None
    return product.get("threshold_override_for") or STUDENT


def override_basis(product: dict) -> tuple[float, float] | None:
    """The (image, pixel) calibration the override was set against; None if not recorded."""
    image = product.get("override_basis_image")
    return None if image is None else (image, product.get("override_basis_pixel"))


def override_recalibrated(product: dict, calibrated: Thresholds) -> bool:
    """The calibration the override was set against has been replaced since (a retrained
    student, a refitted head): its values are on a scale that no longer holds, so it no
    longer decides. Overrides set before their basis was recorded keep applying."""
    basis = override_basis(product)
    return basis is not None and basis != (calibrated.image, calibrated.pixel)


def override_applies(product: dict, who: str, calibrated: Thresholds) -> bool:
    """The override decides ``who``'s verdicts: set on that path's scores, on the
    calibration that path has now."""
    return override_set_for(product) == who and not override_recalibrated(product, calibrated)


class ProductService:
    def __init__(self, db: Database, registry: ModelRegistry) -> None:
        self.db, self.registry = db, registry
        # (who answers, its calibrated thresholds): InspectionService.serving, set by the
        # runtime (a head may answer before training or instead of the student)
        self.serving: Callable[[dict], tuple[str, Thresholds] | None] | None = None

    def get(self, product_id: int) -> dict:
        with self.db.connect(write=False) as conn:
            return found(repo.get_product(conn, product_id), f"no product with id {product_id}")

    def resolve(self, ref: str) -> dict:
        """A product by id (ASCII digits) or else by name."""
        with self.db.connect(write=False) as conn:
            by_id = None
            if ref.isascii() and ref.isdigit() and 0 < int(ref) <= SQLITE_MAX_ID:
                by_id = repo.get_product(conn, int(ref))
            return found(by_id or repo.find_product(conn, ref), f"no product {ref!r}")

    def names(self) -> dict[int, str]:
        with self.db.connect(write=False) as conn:
            return {p["id"]: p["name"] for p in repo.list_products(conn)}

    def create(self, name: str, description: str) -> dict:
        with self.db.connect() as conn:
            if repo.find_product(conn, name):
                raise ProductExistsError(f"a product named {name!r} already exists")
            product = repo.create_product(conn, name, description)
        return self.view(product)

    def list(self) -> list[dict]:
        with self.db.connect(write=False) as conn:
            products = repo.list_products(conn)
        return [self.view(p) for p in products]

    def set_override(self, product_id: int, image: float | None, pixel: float | None) -> dict:
        """Values on the scale of the path that answers now, on its calibration now: both
        recorded, so a recalibration sets the override aside instead of reading it on a
        new scale."""
        serving = self.serving(self.get(product_id)) if self.serving else None
        setting = serving is not None and (image is not None or pixel is not None)
        answerer, calibrated = serving if setting else (None, None)
        basis = (calibrated.image, calibrated.pixel) if calibrated is not None else None
        with self.db.connect() as conn:
            repo.set_threshold_override(conn, product_id, image, pixel, answerer, basis)
        return self.view(self.get(product_id))

    def record_override_bases(self, calibration: Callable[[dict, str], Thresholds | None]
                              ) -> list[str]:
        """Overrides set before their calibration was recorded (an earlier release) get the
        one their path has at start-up, ``calibration(product, who)``, so the next
        recalibration sets them aside; names of the products recorded."""
        recorded = []
        with self.db.connect() as conn:
            for product in repo.list_products(conn):
                who = override_set_for(product)
                if who is None or override_basis(product) is not None:
                    continue
                calibrated = calibration(product, who)
                if calibrated is not None:
                    repo.set_override_basis(conn, product["id"], calibrated.image,
                                            calibrated.pixel)
                    recorded.append(product["name"])
        return recorded

    def is_trained(self, product: dict) -> bool:
        return self.registry.thresholds(product["name"]) is not None

    def require_trained(self, product: dict) -> None:
        """NotTrainedError, with what to do, before the student's first training."""
        if self.registry.thresholds(product["name"]) is None:
            raise NotTrainedError(f"product {product['name']!r} has no trained model yet; "
                                  f"add captures and POST /products/{product['id']}/train")

    def view(self, product: dict) -> dict:
        with self.db.connect(write=False) as conn:
            captures = repo.count_captures(conn, product["id"])
        student = self.registry.thresholds(product["name"])
        serving = (self.serving(product) if self.serving
                   else (STUDENT, student) if student else None)  # without the heads
        who, calibrated = serving or (None, None)
        set_for = override_set_for(product)
        active = who is not None and override_applies(product, who, calibrated)
        # set on the answering path's scores, but on a calibration it has replaced since
        recalibrated = (set_for is not None and set_for == who
                        and override_recalibrated(product, calibrated))
        basis = override_basis(product) if set_for else None
        return {
            "id": product["id"], "name": product["name"],
            "description": product["description"], "created_at": product["created_at"],
            "captures": captures, "trained": student is not None, "served_by": who,
            "thresholds": calibrated and {"image": calibrated.image, "pixel": calibrated.pixel,
                                          "normal_scores": list(calibrated.normal_scores),
                                          "warning": calibrated.warning},
            "threshold_override": {
                "image": product["image_threshold_override"],
                "pixel": product["pixel_threshold_override"], "set_for": set_for,
                "active": active, "recalibrated": recalibrated,
                "set_on": basis and dict(zip(("image", "pixel"), basis, strict=True))},
        }
