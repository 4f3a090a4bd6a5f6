"""The on-disk replay memory: a byte budget (or a sample count) shared equally by products.

Capacity: ``budget_bytes`` is the primary limit. Each product gets an equal share of it and
keeps as many samples as fit in that share with the store's codec, counting everything
written for the product: payload rows, per-sample scales and shared codebooks/bases
(accounting.group_bytes). A compact codec therefore buys more samples for the same bytes.
``capacity`` (samples, shared equally the same way) remains for the papers' equal-samples
comparison; when both are set both hold. The manifest itself is bookkeeping, not counted.

Layout: ``store.json`` (the manifest, the one commit point) and one immutable file per
product group (``g<N>.bin``: payload rows, then per-sample meta rows, then shared meta),
named by a counter, never by the product name. Every change writes new group files,
fsyncs them, then atomically replaces the manifest; files the manifest no longer names are
deleted afterwards (or at the next open). A writer killed at any point leaves the store as
before or as after. Each group's SHA-256 is checked when the store opens.

Eviction policy (documented, deterministic): a product's samples are stored in the order of
the store's selection policy (replay/selection.py: seeded random, or greedy k-center), and
when its share shrinks the store keeps the first rows that fit; the kept sets are nested.
A share too small for one sample (plus the codec's shared metadata) keeps none.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_path, atomic_write_bytes, sha256_file
from edge_runtime.replay.accounting import MANIFEST, summarise
from edge_runtime.replay.codecs import Codec, Encoded, make_codec
from edge_runtime.replay.selection import SELECTIONS, selection_order

FORMAT_VERSION = 1  # budget_bytes and selection were added with defaults: still version 1
DEFAULT_CAPACITY = 100
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


def quotas(capacity: int | None, count: int) -> list[int | None]:
    """Equal shares of ``capacity``; the remainder goes to the earliest products."""
    if count == 0:
        return []
    if capacity is None:
        return [None] * count
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
        capacity: int | None = None,
        seed: int = 0,
        budget_bytes: int | None = None,
        selection: str | None = None,
    ) -> None:
        """Open the store in ``directory``, or create it (then ``codec`` is required).

        Limits left as None keep what the store was created with (a new store with
        neither limit holds ``DEFAULT_CAPACITY`` samples); limits given that differ from
        the stored ones take effect at once (shares shrink, never regrow evicted rows).
        ``set_limits`` replaces both, for a caller whose settings are the authority.
        """
        _check_limits(capacity, budget_bytes)
        if selection is not None and selection not in SELECTIONS:
            raise ValueError(f"unknown replay selection {selection!r}; choose from "
                             f"{', '.join(SELECTIONS)}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._maps: dict[str, np.memmap] = {}
        manifest = self.directory / MANIFEST
        if manifest.exists() and codec is not None:
            _set_aside_if_unreadable(manifest)
        if manifest.exists():
            self._load(manifest, codec)
            if selection is not None:
                self.selection = selection  # applies to products added from now on
            self.set_limits(self.capacity if capacity is None else capacity,
                            self.budget_bytes if budget_bytes is None else budget_bytes)
        else:
            if codec is None:
                raise ReplayStoreError(f"{self.directory} holds no store; name a codec")
            if capacity is None and budget_bytes is None:
                capacity = DEFAULT_CAPACITY
            self.codec, self.capacity, self.budget_bytes = codec, capacity, budget_bytes
            self.seed, self.selection = seed, selection or "random"
            self.sample_shape: tuple[int, ...] | None = None
            self.groups: list[Group] = []
            self.next_group = 0
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
        self.budget_bytes = data.get("budget_bytes")
        self.selection = data.get("selection", "random")
        self.sample_shape = tuple(data["sample_shape"]) if data["sample_shape"] else None
        self.groups = [Group(**g) for g in data["groups"]]
        self.next_group = data["next_group"]
        self.groups = _readable_groups(self.directory, self.groups)

    def _manifest_bytes(self) -> bytes:
        return json.dumps({
            "format_version": FORMAT_VERSION,
            "codec": {"name": self.codec.name, "params": self.codec.params()},
            "capacity": self.capacity,
            "budget_bytes": self.budget_bytes,
            "selection": self.selection,
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
    def _rows(self, group: Group) -> tuple[np.ndarray, np.ndarray, bytes]:
        path = self.directory / group.file
        if group.count == 0:
            return (np.zeros((0, group.payload_width), np.uint8),
                    np.zeros((0, group.meta_width), np.uint8), b"")
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
        """Every stored sample, decoded, in ``epoch_plan`` numbering."""
        if not self.groups:
            raise ReplayStoreError("the replay store is empty")
        return self.decode(np.arange(len(self)))

    def epoch_plan(self, rng: np.random.Generator, steps: int, count: int) -> list[np.ndarray]:
        """Global row indices for one epoch of ``steps`` replay batches of ``count``.

        Every product with samples gets an equal share of the epoch's draws (at least one,
        so when products outnumber ``steps * count`` the batches grow by the difference),
        and a product's rows are drawn without replacement until all were drawn once.
        """
        starts = np.cumsum([0] + [g.count for g in self.groups])
        stored = [i for i, g in enumerate(self.groups) if g.count]
        if not stored:
            raise ReplayStoreError("the replay store is empty")
        slots = max(steps * count, len(stored))
        shares = np.full(len(stored), slots // len(stored))
        shares[rng.choice(len(stored), slots % len(stored), replace=False)] += 1
        draws = []
        for index, share in zip(stored, shares, strict=True):
            rows = self.groups[index].count
            cycles = [rng.permutation(rows) for _ in range(-(-share // rows))]
            draws.append(np.concatenate(cycles)[:share] + starts[index])
        flat = np.concatenate(draws)[rng.permutation(slots)]
        return np.array_split(flat, steps)

    def epoch_batches(self, rng: np.random.Generator, steps: int,
                      count: int) -> Iterator[np.ndarray]:
        """One epoch of decoded replay batches (see ``epoch_plan``), decoded one at a time."""
        for picks in self.epoch_plan(rng, steps, count):
            yield self.decode(picks)

    def accounting(self) -> dict:
        """Exact bytes: payload (the samples) and metadata (scales, codebooks) apart."""
        codec = {"name": self.codec.name, "params": self.codec.params()}
        return summarise(codec, self.capacity, [asdict(g) for g in self.groups],
                         self.budget_bytes, self.selection)

    # ---- writing -----------------------------------------------------------------------
    def set_limits(self, capacity: int | None, budget_bytes: int | None) -> None:
        """Change the limits (None: no limit of that kind); shrinks shares at once."""
        _check_limits(capacity, budget_bytes)
        if capacity is None and budget_bytes is None:
            raise ValueError("a replay store needs a sample capacity or a byte budget")
        if (capacity, budget_bytes) == (self.capacity, self.budget_bytes):
            return
        self.capacity, self.budget_bytes = capacity, budget_bytes
        self._commit(self._fit(self.groups, len(self.groups)))

    def _fit(self, groups: list[Group], products: int) -> list[Group]:
        """``groups`` shrunk to the first ``len(groups)`` of ``products`` equal shares."""
        samples = quotas(self.capacity, products)
        budgets = quotas(self.budget_bytes, products)
        fitted = []
        for group, cap, budget in zip(groups, samples, budgets, strict=False):
            keep = _fitting_rows(group.count, group.payload_width + group.meta_width,
                                 group.shared_len, cap, budget)
            fitted.append(group if keep == group.count else self._shrink(group, keep))
        return fitted

    def add(self, product: str, samples: np.ndarray) -> np.ndarray:
        """Store ``product``'s samples (replacing any it had), shrinking earlier products to
        equal shares. ``samples`` are what the codec consumes (features or uint8 images).
        Returns the indices into ``samples`` of the rows kept, in stored order."""
        if len(samples) == 0:
            raise ValueError("no samples to store")
        shape = tuple(samples.shape[1:])
        if self.sample_shape is not None and shape != self.sample_shape:
            raise ReplayStoreError(f"sample shape {shape} differs from the store's "
                                   f"{self.sample_shape}")
        self.sample_shape = shape
        kept = [g for g in self.groups if g.product != product]
        groups = self._fit(kept, len(kept) + 1)
        cap = quotas(self.capacity, len(kept) + 1)[-1]
        budget = quotas(self.budget_bytes, len(kept) + 1)[-1]
        order = selection_order(self.selection, samples, self.codec.input_kind, self.seed,
                                product)
        if cap is not None:
            order = order[:cap]
        encoded = self.codec.encode(samples[order])
        row = encoded.payload.shape[1] + encoded.sample_meta.shape[1]
        keep = _fitting_rows(len(order), row, len(encoded.shared_meta), cap, budget)
        if keep < len(order):  # the codebook was fitted on more rows than fit: still valid
            encoded = _truncate(encoded, keep)
        groups.append(self._write_group(product, encoded))
        self._commit(groups)
        return order[:keep]

    def remove(self, product: str) -> None:
        """Forget a deleted product's samples (the others keep theirs as they are)."""
        self._commit([g for g in self.groups if g.product != product])

    def _shrink(self, group: Group, count: int) -> Group:
        payload, meta, shared = self._rows(group)
        return self._write_group(group.product,
                                 _truncate(Encoded(np.asarray(payload), np.asarray(meta), shared),
                                           count))


def _check_limits(capacity: int | None, budget_bytes: int | None) -> None:
    if capacity is not None and capacity < 1:
        raise ValueError("replay capacity must be at least 1 sample")
    if budget_bytes is not None and budget_bytes < 1:
        raise ValueError("replay budget_bytes must be at least 1 byte")


def _fitting_rows(count: int, row_bytes: int, shared_len: int, cap: int | None,
                  budget: int | None) -> int:
    """How many of ``count`` rows one product keeps under its sample and byte shares."""
    keep = count if cap is None else min(count, cap)
    if budget is not None:
        room = budget - shared_len
        keep = min(keep, max(room, 0) // row_bytes) if row_bytes else keep * (room >= 0)
    return keep


def _truncate(encoded: Encoded, count: int) -> Encoded:
    """The first ``count`` rows; an empty group keeps no shared metadata either."""
    return Encoded(encoded.payload[:count], encoded.sample_meta[:count],
                   encoded.shared_meta if count else b"")
