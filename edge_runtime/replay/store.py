"""The on-disk replay memory: a fixed number of samples shared equally among products.

Layout: ``store.json`` (the manifest, the one commit point) and one immutable file per
product group (``g<N>.bin``: payload rows, then per-sample meta rows, then shared meta),
named by a counter, never by the product name. Every change writes new group files,
fsyncs them, then atomically replaces the manifest; files the manifest no longer names are
deleted afterwards (or at the next open). A writer killed at any point leaves the store as
before or as after. Each group's SHA-256 is checked when the store opens.

Eviction policy (documented, deterministic): a product's samples are stored in a seeded
random order, and when its quota shrinks the store keeps the first ``quota`` rows. Each
product therefore keeps a uniformly random subset, and the subsets are nested.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from zlib import crc32

import numpy as np

from edge_runtime.atomic import atomic_path, atomic_write_bytes, sha256_file
from edge_runtime.replay.accounting import MANIFEST, summarise
from edge_runtime.replay.codecs import Codec, Encoded, make_codec

FORMAT_VERSION = 1
log = logging.getLogger("edge_runtime.replay")


class ReplayStoreError(RuntimeError):
    """The store is corrupt, or used with a codec it was not created with."""


@dataclass
class Group:
    product: str
    file: str
    count: int
    payload_width: int
    meta_width: int
    shared_len: int
    sha256: str

    @property
    def payload_bytes(self) -> int:
        return self.count * self.payload_width

    @property
    def metadata_bytes(self) -> int:
        return self.count * self.meta_width + self.shared_len


def quotas(capacity: int, count: int) -> list[int]:
    """Equal shares of ``capacity``; the remainder goes to the earliest products."""
    if count == 0:
        return []
    base, extra = divmod(capacity, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _set_aside_if_unreadable(manifest: Path) -> None:
    """A manifest that does not parse is renamed aside with a log line: the store starts
    empty (its group files are collected), and training goes on without that replay."""
    try:
        data = json.loads(manifest.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
            raise ValueError("not a replay store manifest")
    except (OSError, ValueError) as exc:
        aside = manifest.with_name(f"{manifest.name}.corrupt-{time.time_ns()}")
        os.replace(manifest, aside)
        log.error("replay store manifest %s is unreadable (%s); kept as %s, starting empty",
                  manifest, exc, aside.name)


def _readable_groups(directory: Path, groups: list[Group]) -> list[Group]:
    """The groups whose file is present and passes its checksum; each one dropped is
    logged (one lost product's samples must not stop every later training job)."""
    kept = []
    for group in groups:
        path = directory / group.file
        if path.is_file() and sha256_file(path) == group.sha256:
            kept.append(group)
        else:
            log.error("replay group %s of product %r is missing or fails its checksum; "
                      "dropped", path, group.product)
    return kept


class ReplayStore:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        codec: Codec | None = None,
        capacity: int = 100,
        seed: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.directory / MANIFEST
        if manifest.exists() and codec is not None:
            _set_aside_if_unreadable(manifest)
        if manifest.exists():
            self._load(manifest, codec)
        else:
            if codec is None:
                raise ReplayStoreError(f"{self.directory} holds no store; name a codec")
            if capacity < 1:
                raise ValueError("replay capacity must be at least 1 sample")
            self.codec, self.capacity, self.seed = codec, capacity, seed
            self.sample_shape: tuple[int, ...] | None = None
            self.groups: list[Group] = []
            self.next_group = 0
        self._maps: dict[str, np.memmap] = {}
        self._collect_garbage()

    # ---- persistence -------------------------------------------------------------------
    def _load(self, manifest: Path, codec: Codec | None) -> None:
        try:
            data = json.loads(manifest.read_text())
        except ValueError as exc:
            raise ReplayStoreError(f"{manifest} is unreadable: {exc}") from exc
        if data.get("format_version") != FORMAT_VERSION:
            raise ReplayStoreError(f"{manifest}: unsupported format {data.get('format_version')}")
        stored = make_codec(data["codec"]["name"], **data["codec"]["params"])
        if codec is not None and (codec.name, codec.params()) != (stored.name, stored.params()):
            raise ReplayStoreError(
                f"{self.directory} was created with codec {stored.name} {stored.params()}, "
                f"not {codec.name} {codec.params()}"
            )
        self.codec = stored
        self.capacity, self.seed = data["capacity"], data["seed"]
        self.sample_shape = tuple(data["sample_shape"]) if data["sample_shape"] else None
        self.groups = [Group(**g) for g in data["groups"]]
        self.next_group = data["next_group"]
        self.groups = _readable_groups(self.directory, self.groups)

    def _manifest_bytes(self) -> bytes:
        return json.dumps({
            "format_version": FORMAT_VERSION,
            "codec": {"name": self.codec.name, "params": self.codec.params()},
            "capacity": self.capacity,
            "seed": self.seed,
            "sample_shape": list(self.sample_shape) if self.sample_shape else None,
            "next_group": self.next_group,
            "groups": [asdict(g) for g in self.groups],
        }, indent=2).encode()

    def _write_group(self, product: str, encoded: Encoded) -> Group:
        name = f"g{self.next_group:06d}.bin"
        self.next_group += 1
        with atomic_path(self.directory / name) as tmp, open(tmp, "wb") as handle:
            handle.write(np.ascontiguousarray(encoded.payload, np.uint8).tobytes())
            handle.write(np.ascontiguousarray(encoded.sample_meta, np.uint8).tobytes())
            handle.write(encoded.shared_meta)
        return Group(product, name, len(encoded.payload), encoded.payload.shape[1],
                     encoded.sample_meta.shape[1], len(encoded.shared_meta),
                     sha256_file(self.directory / name))

    def _commit(self, groups: list[Group]) -> None:
        previous = self.groups
        self.groups = groups
        try:
            atomic_write_bytes(self.directory / MANIFEST, self._manifest_bytes())
        except BaseException:
            self.groups = previous
            raise
        self._maps.clear()
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete group files and temp files that the committed manifest does not name."""
        live = {g.file for g in self.groups} | {MANIFEST}
        for path in self.directory.iterdir():
            if path.name not in live and (path.suffix in (".bin", ".tmp")):
                path.unlink(missing_ok=True)

    # ---- reading -----------------------------------------------------------------------
    def _rows(self, group: Group) -> tuple[np.memmap, np.memmap, bytes]:
        path = self.directory / group.file
        if group.file not in self._maps:
            self._maps[group.file] = np.memmap(path, dtype=np.uint8, mode="r")
        raw = self._maps[group.file]
        payload_end = group.count * group.payload_width
        meta_end = payload_end + group.count * group.meta_width
        payload = raw[:payload_end].reshape(group.count, group.payload_width)
        meta = raw[payload_end:meta_end].reshape(group.count, group.meta_width)
        return payload, meta, bytes(raw[meta_end:])

    def _decode(self, group: Group, rows: np.ndarray) -> np.ndarray:
        payload, meta, shared = self._rows(group)
        return self.codec.decode(np.asarray(payload[rows]), np.asarray(meta[rows]), shared,
                                 self.sample_shape)

    def __len__(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def products(self) -> list[str]:
        return [g.product for g in self.groups]

    def decode_product(self, product: str) -> np.ndarray:
        """All of one product's samples, decoded (for tests and the codec benchmark)."""
        group = next((g for g in self.groups if g.product == product), None)
        if group is None:
            raise KeyError(product)
        return self._decode(group, np.arange(group.count))

    def sample_indices(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """The indices (into ``decode_all()``) that ``sample`` would decode, in its order:
        the same draws from ``rng``, so a trainer holding decoded samples sees the same
        batches."""
        total = len(self)
        if total == 0:
            raise ReplayStoreError("the replay store is empty")
        picks = np.sort(rng.choice(total, size=count, replace=count > total))
        return picks[rng.permutation(len(picks))]

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` samples drawn uniformly over everything stored, decoded; only this
        batch is ever decoded into RAM."""
        return self.decode(self.sample_indices(rng, count))

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """The samples at ``indices`` (numbered across products in store order), decoded,
        in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        chosen = indices[order]
        starts = np.cumsum([0] + [g.count for g in self.groups])
        if len(chosen) and (chosen[0] < 0 or chosen[-1] >= starts[-1]):
            raise IndexError("replay sample index out of range")
        parts = []
        for index, group in enumerate(self.groups):
            rows = chosen[(chosen >= starts[index]) & (chosen < starts[index + 1])]
            if len(rows):
                parts.append(self._decode(group, rows - starts[index]))
        decoded = np.concatenate(parts)
        batch = np.empty_like(decoded)
        batch[order] = decoded
        return batch

    def decode_all(self) -> np.ndarray:
        """Every stored sample, decoded, in ``sample_indices`` numbering."""
        if not self.groups:
            raise ReplayStoreError("the replay store is empty")
        return self.decode(np.arange(len(self)))

    def accounting(self) -> dict:
        """Exact bytes: payload (the samples) and metadata (scales, codebooks) apart."""
        codec = {"name": self.codec.name, "params": self.codec.params()}
        return summarise(codec, self.capacity, [asdict(g) for g in self.groups])

    # ---- writing -----------------------------------------------------------------------
    def _order(self, product: str, count: int) -> np.ndarray:
        return np.random.default_rng([self.seed, crc32(product.encode())]).permutation(count)

    def add(self, product: str, samples: np.ndarray) -> None:
        """Store ``product``'s samples (replacing any it had), shrinking earlier products to
        equal shares. ``samples`` are what the codec consumes (features or uint8 images)."""
        if len(samples) == 0:
            raise ValueError("no samples to store")
        shape = tuple(samples.shape[1:])
        if self.sample_shape is not None and shape != self.sample_shape:
            raise ReplayStoreError(f"sample shape {shape} differs from the store's "
                                   f"{self.sample_shape}")
        self.sample_shape = shape
        kept = [g for g in self.groups if g.product != product]
        shares = quotas(self.capacity, len(kept) + 1)
        groups = []
        for group, share in zip(kept, shares, strict=False):
            groups.append(group if group.count <= share else self._shrink(group, share))
        order = self._order(product, len(samples))[: shares[-1]]
        groups.append(self._write_group(product, self.codec.encode(samples[order])))
        self._commit(groups)

    def remove(self, product: str) -> None:
        self._commit([g for g in self.groups if g.product != product])

    def _shrink(self, group: Group, count: int) -> Group:
        payload, meta, shared = self._rows(group)
        encoded = Encoded(np.asarray(payload[:count]), np.asarray(meta[:count]), shared)
        return self._write_group(group.product, encoded)
