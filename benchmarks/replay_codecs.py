"""Replay codecs on real data: bytes (payload + metadata, from the store's own
accounting), encode/decode time per sample, and reconstruction error, for every codec.

The samples are training images spread evenly over the data root's categories, each
category a product of one on-disk ReplayStore of that many samples.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED, emit_json, print_table
from tqdm import tqdm

from edge_runtime.dataset import list_categories, train_images
from edge_runtime.inference.preprocess import load_rgb, normalise
from edge_runtime.replay.codecs import CODEC_NAMES, make_codec
from edge_runtime.replay.store import ReplayStore
from edge_runtime.training.bundle import ModelBundle


def _errors(decoded: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    d = decoded.reshape(len(decoded), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    rel = float(np.linalg.norm(d - r) / np.linalg.norm(r))
    cos = np.sum(d * r, axis=1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(r, axis=1))
    return rel, float(np.mean(cos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--pq-subvectors", type=int, default=6)
    parser.add_argument("--pq-bits", type=int, default=7)
    parser.add_argument("--pca-components", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="30 samples")
    args = parser.parse_args()
    total = 30 if args.quick else args.samples
    categories = list_categories(args.data)
    shares = [total // len(categories) + (i < total % len(categories))
              for i in range(len(categories))]
    images = {c: train_images(args.data, c, n) for c, n in zip(categories, shares, strict=True)}
    bundle = ModelBundle()
    features = {c: bundle.features(paths) for c, paths in tqdm(images.items(), desc="trunk")}
    rgb = {c: np.stack([load_rgb(p, 256) for p in paths]) for c, paths in images.items()}
    params = {"pq": {"num_subvectors": args.pq_subvectors, "bits": args.pq_bits},
              "pca": {"components": args.pca_components}}
    results, rows = {}, []
    for name in tqdm(CODEC_NAMES, desc="codecs"):
        store = ReplayStore(tempfile.mkdtemp(), make_codec(name, **params.get(name, {})), total)
        inputs = rgb if name == "image" else features
        start = time.perf_counter()
        kept = {c: store.add(c, inputs[c]) for c in categories}  # indices, in stored order
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = {c: store.decode_product(c) for c in categories}
        decode_s = time.perf_counter() - start
        # the store keeps every sample here (capacity == total), in its own row order
        reference = np.concatenate([
            (normalise(rgb[c]) if name == "image" else features[c])[kept[c]]
            for c in categories])
        rel, cos = _errors(np.concatenate([decoded[c] for c in categories]), reference)
        acc = store.accounting()
        results[name] = {
            "payload_bytes": acc["payload_bytes"], "metadata_bytes": acc["metadata_bytes"],
            "rel_l2": round(rel, 6), "cosine": round(cos, 6),
            "encode_ms": round(encode_s / total * 1000, 3),
            "decode_ms": round(decode_s / total * 1000, 3),
        }
        mb = (acc["payload_bytes"] + acc["metadata_bytes"]) / 1e6
        rows.append([name, acc["payload_bytes"], acc["metadata_bytes"], mb, rel, cos,
                     results[name]["encode_ms"], results[name]["decode_ms"]])
    print(f"{total} samples at 256 px from {', '.join(categories)}; "
          f"pq: {args.pq_subvectors} subvectors x {args.pq_bits} bits; "
          f"pca: {args.pca_components} components (fp16)")
    print_table(["codec", "payload B", "metadata B", "total MB", "rel L2", "cosine",
                 "encode ms/sample", "decode ms/sample"], rows)
    fp32 = results["fp32"]["payload_bytes"] + results["fp32"]["metadata_bytes"]
    pq = results["pq"]["payload_bytes"] + results["pq"]["metadata_bytes"]
    print(f"\npq / fp32 bytes: {pq / fp32:.3f} (target <= 0.1)")
    emit_json({"samples": total, "codecs": results,
               "settings": {"pq": params["pq"], "pca": params["pca"]}})


if __name__ == "__main__":
    main()
