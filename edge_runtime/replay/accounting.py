"""Byte accounting straight from a store's manifest: no codecs, no numpy decoding, so
the API process can report it cheaply. The store enforces its budget with the very same
arithmetic (``group_bytes``), so what /status reports is what the budget limits."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "store.json"


def group_bytes(count: int, payload_width: int, meta_width: int, shared_len: int) -> int:
    """Bytes of one product's group file: payload rows, per-sample meta rows (scales) and
    shared meta (codebooks, PCA bases)."""
    return count * (payload_width + meta_width) + shared_len


def summarise(codec: dict, capacity: int | None, groups: list[dict],
              budget_bytes: int | None = None, selection: str = "random") -> dict:
    per_product = {}
    for g in groups:
        per_product[g["product"]] = {
            "samples": g["count"],
            "codec": codec["name"],
            "payload_bytes": g["count"] * g["payload_width"],
            "metadata_bytes": g["count"] * g["meta_width"] + g["shared_len"],
            "bytes": group_bytes(g["count"], g["payload_width"], g["meta_width"],
                                 g["shared_len"]),
        }
    return {
        "codec": codec["name"], "codec_params": codec["params"], "capacity": capacity,
        "budget_bytes": budget_bytes, "selection": selection,
        "samples": sum(v["samples"] for v in per_product.values()),
        "payload_bytes": sum(v["payload_bytes"] for v in per_product.values()),
        "metadata_bytes": sum(v["metadata_bytes"] for v in per_product.values()),
        "bytes": sum(v["bytes"] for v in per_product.values()),
        "products": per_product,
    }


def read_accounting(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return summarise(data["codec"], data["capacity"], data["groups"],
                     data.get("budget_bytes"), data.get("selection", "random"))
