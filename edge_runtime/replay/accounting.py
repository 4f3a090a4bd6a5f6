"""Byte accounting straight from a store's manifest: no codecs, no numpy decoding, so
the API process can report it cheaply."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "store.json"


def summarise(codec: dict, capacity: int, groups: list[dict]) -> dict:
    per_product = {}
    for g in groups:
        per_product[g["product"]] = {
            "samples": g["count"],
            "payload_bytes": g["count"] * g["payload_width"],
            "metadata_bytes": g["count"] * g["meta_width"] + g["shared_len"],
        }
    return {
        "codec": codec["name"], "codec_params": codec["params"], "capacity": capacity,
        "samples": sum(v["samples"] for v in per_product.values()),
        "payload_bytes": sum(v["payload_bytes"] for v in per_product.values()),
        "metadata_bytes": sum(v["metadata_bytes"] for v in per_product.values()),
        "products": per_product,
    }


def read_accounting(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return summarise(data["codec"], data["capacity"], data["groups"])
