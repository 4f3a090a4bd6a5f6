"""Deleting a product, and what that means for the model and the replay store.

The rows (captures, jobs, inspections) and the files (captures, kept maps, the memory-bank
head and its serving choice) go now. The
model directories are never edited in place (they carry checksums), so the live model keeps
what it learned about the product until the next training: that training no longer
recalibrates or rehearses it, drops it from the new version and removes its samples from
the replay store (the training worker owns the store). Older versions on disk still know
it; rolling back to one serves it again only if a product of that name is created again.
"""

from __future__ import annotations

from edge_runtime.services import events
from edge_runtime.services.captures import CaptureService
from edge_runtime.services.errors import ConflictError
from edge_runtime.services.heads import HeadService
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.products import ProductService
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

CONSEQUENCES = (
    "Deletes the product's captures, training jobs, inspection records, kept maps and "
    "memory-bank head now. "
    "The live model keeps what it learned until the next training, which drops the product "
    "from the model and removes its samples from the replay store. Older model versions on "
    "disk still contain it.")


class ProductRemoval:
    def __init__(self, db: Database, products: ProductService, captures: CaptureService,
                 inspections: InspectionService, jobs: JobManager,
                 bus: events.EventBus, heads: HeadService | None = None) -> None:
        self.db, self.products, self.captures = db, products, captures
        self.inspections, self.jobs, self.bus, self.heads = inspections, jobs, bus, heads

    def delete(self, product_id: int) -> dict:
        product = self.products.get(product_id)
        active = self.jobs.active()
        if active and active["product_id"] == product_id:
            raise ConflictError(f"a training job ({active['id']}) of {product['name']!r} is "
                                "running; cancel it first")
        self.inspections.forget_product(product_id)
        with self.db.connect() as conn:
            repo.delete_product(conn, product_id)
        self.captures.delete_files(product_id)
        if self.heads:  # its head (RAM and file) and serving choice
            self.heads.forget(product_id)
        in_model = self.products.registry.thresholds(product["name"]) is not None
        self.bus.publish(events.PRODUCT, {"id": product_id, "name": product["name"],
                                          "deleted": True})
        return {"id": product_id, "name": product["name"], "deleted": True,
                "in_live_model": in_model, "consequences": CONSEQUENCES}
