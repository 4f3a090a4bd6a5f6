"""Products: names, the "is it trained" rule, and the thresholds that decide its verdicts."""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services.errors import NotTrainedError, ProductExistsError, found
from edge_runtime.services.models import ModelRegistry
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

SQLITE_MAX_ID = 2**63 - 1


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
        """Values on the scale of the path that answers now, and recorded as such."""
        serving = self.serving(self.get(product_id)) if self.serving else None
        answerer = serving[0] if serving and (image is not None or pixel is not None) else None
        with self.db.connect() as conn:
            repo.set_threshold_override(conn, product_id, image, pixel, answerer)
        return self.view(self.get(product_id))

    def is_trained(self, product: dict) -> bool:
        return self.registry.thresholds(product["name"]) is not None

    def thresholds(self, product: dict) -> Thresholds:
        """What decides this product's verdicts now: calibrated, then the operator's
        override where set. NotTrainedError before the first training."""
        calibrated = self.registry.thresholds(product["name"])
        if calibrated is None:
            raise NotTrainedError(f"product {product['name']!r} has no trained model yet; "
                                  f"add captures and POST /products/{product['id']}/train")
        return calibrated.overridden(product["image_threshold_override"],
                                     product["pixel_threshold_override"])

    def view(self, product: dict) -> dict:
        with self.db.connect(write=False) as conn:
            captures = repo.count_captures(conn, product["id"])
        student = self.registry.thresholds(product["name"])
        serving = (self.serving(product) if self.serving
                   else ("student", student) if student else None)  # without the heads
        who, calibrated = serving or (None, None)
        image, pixel = product["image_threshold_override"], product["pixel_threshold_override"]
        overridden = image is not None or pixel is not None
        # untagged (set before overrides were tagged): taken as the student's, the usual case
        set_for = (product.get("threshold_override_for") or "student") if overridden else None
        return {
            "id": product["id"], "name": product["name"],
            "description": product["description"], "created_at": product["created_at"],
            "captures": captures, "trained": student is not None, "served_by": who,
            "thresholds": calibrated and {"image": calibrated.image, "pixel": calibrated.pixel,
                                          "normal_scores": list(calibrated.normal_scores),
                                          "warning": calibrated.warning},
            "threshold_override": {
                "image": image, "pixel": pixel, "set_for": set_for,
                "active": overridden and set_for == who},
        }
