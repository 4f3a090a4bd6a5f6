"""Memory-bank heads on the frozen features: a verdict for a new product within seconds.

The student needs a training job before its first verdict; these heads need none. They
read the patch embeddings of the trunk + frozen teacher tail (``features.onnx``: layers
6/10/14, each 3x3-aggregated and resampled to one grid, see onnx_export.export_features)
and reduce them with a fixed random projection. Two kinds, after the CLAD supplement
(sections 1.1 and 1.2):

- ``padim`` (the default, chosen by benchmarks/onboarding.py): a Gaussian per grid
  position (mean, and a full, shared or diagonal covariance); a patch's score is its
  Mahalanobis distance.
- ``patchcore``: a greedy k-center coreset of the normal patches (fp16); a patch's
  score is the distance to its nearest neighbour in the bank.

Both produce an (S, S) map and an image score (its max), like the merged student graph,
and are calibrated on held-out normal captures with the same rule. numpy + ORT only: the
serving process fits and runs them without torch. A head is one ``.npz`` (no pickles),
written atomically; its file size is what ``max_bytes`` bounds.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.inference.inferencer import AnomalyInferencer, open_session
from edge_runtime.inference.preprocess import preprocess
from edge_runtime.inference.thresholds import Thresholds, calibrate

FEATURES = "features.onnx"
KINDS = ("patchcore", "padim")
COVARIANCES = ("full", "shared", "diagonal")
SMOOTH_SIGMA = 4.0  # pixels at the output size, as in PatchCore's map smoothing
# The head's input side: the largest multiple of 32 at which the features graph and the
# head (196.5 M MACs) stay under the student graph at 256 (207.8 M). On the validation
# split it beat 256 on every shared product (benchmarks/quality.py, README).
IMAGE_SIZE = 288
# What the features graph's patch embedding is (model/onnx_export.PatchEmbedding): 2 weighs
# each layer's unit vector by mean width / width, 1 did not (the validation figures that
# chose 2 are in README). A head fitted on another embedding is not served but fitted
# again, like one of another size.
EMBEDDING = 2
# PaDiM's covariance regulariser (epsilon I). Not PaDiM's 0.01: at 27 dimensions the
# weighted embedding's projected variances were 0.007-0.08 and 0.003 won; the projection
# scales each dimension by 1 / sqrt(width), so at 62 the same strength is 0.0013, and 0.001
# won on the validation split (figures in README). A head fitted with another is fitted again.
EPSILON = 0.001
# How a full-covariance PaDiM head stores each position's whitening: "lower", a packed
# triangle, half the bytes of a square matrix. A head stored square (27 dimensions, as
# before) is fitted again.
WHITENING = "lower"
# Random-projection widths. PaDiM: 62, the widest at which the features graph and the head
# stayed under the student graph's MACs (207.8 M) with square whitening matrices; on the
# triangle they cost 205.3 M at 288 px. On the validation split wider was better, most on
# magnetic_tile, up to 62 (flat to 64; figures in README). PatchCore's search costs bank
# size x width per position, so it stays narrow.
DIMS = {"padim": 62, "patchcore": 32}
Source = str | os.PathLike[str] | bytes


class HeadError(ValueError):
    """A head file that cannot be used, or settings that cannot fit the byte budget."""


# ---------------------------------------------------------------- features
def _resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear (half-pixel centres, edge-clamped) resampling as an (out, in) matrix."""
    centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    centres = np.clip(centres, 0, in_size - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = (centres - low).astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    matrix[np.arange(out_size), low] += 1 - frac
    matrix[np.arange(out_size), high] += frac
    return matrix


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, s, s) maps at (N, size, size), bilinear: a head's maps beside the student's."""
    if maps.shape[-1] == size:
        return maps
    matrix = _resize_matrix(size, maps.shape[-1])
    return np.einsum("Hh,nhw,Ww->nHW", matrix, maps, matrix, optimize=True).astype(np.float32)


def _smooth_matrix(size: int, sigma: float) -> np.ndarray:
    """Gaussian blur of one axis (reflect-free, renormalised at the borders)."""
    if sigma <= 0:
        return np.eye(size, dtype=np.float32)
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2) * (np.abs(offsets) <= 4 * sigma)
    return (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)


class FeatureRunner:
    """The features graph in ORT: image batch -> (N, grid*grid, D) patch embeddings."""

    def __init__(self, graph_path: str | os.PathLike[str], image_size: int, threads: int = 0,
                 spinning: bool = False, arena: bool = True) -> None:
        self.image_size = image_size
        self.session = open_session(graph_path, threads, spinning, arena=arena)
        probe = np.zeros((1, 3, image_size, image_size), np.float32)
        shape = self.session.run(["patches"], {"image": probe})[0].shape
        self.dim, self.grid = int(shape[1]), int(shape[2])  # (sum of channels, grid side)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        patches = self.session.run(["patches"], {"image": batch})[0]
        count, dim = patches.shape[:2]
        return np.ascontiguousarray(patches.reshape(count, dim, -1).transpose(0, 2, 1))

    def embed_batches(self, sources: Sequence[Source], batch_size: int = 4,
                      progress: Callable[[int, int], None] | None = None
                      ) -> Iterator[np.ndarray]:
        """Embeddings, one small batch of decoded images in RAM at a time."""
        for start in range(0, len(sources), batch_size):
            part = sources[start : start + batch_size]
            yield self.embed(np.stack([preprocess(s, self.image_size) for s in part]))
            if progress:
                progress(min(start + batch_size, len(sources)), len(sources))

    def embed_sources(self, sources: Sequence[Source], batch_size: int = 4,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embeddings of every image (benchmarks and tests: (N, grid*grid, D) in RAM)."""
        return np.concatenate(list(self.embed_batches(sources, batch_size, progress)))


# ---------------------------------------------------------------- heads
def projection(dim_in: int, dim_out: int, seed: int) -> np.ndarray:
    """Gaussian random projection (Johnson-Lindenstrauss), identity when not reducing."""
    if dim_out >= dim_in:
        return np.eye(dim_in, dtype=np.float32)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_out)).astype(np.float32)


def greedy_k_center(points: np.ndarray, count: int, seed: int = 0,
                    selection_dim: int = 16) -> np.ndarray:
    """Indices of ``count`` points that cover the set (minimax facility location, greedy).

    Distances during selection use a further random projection to ``selection_dim``, as in
    PatchCore: each step is then one small matrix-vector product over the candidates."""
    if count >= len(points):
        return np.arange(len(points))
    reduced = points @ projection(points.shape[1], selection_dim, seed + 1)
    reduced = np.ascontiguousarray(reduced, dtype=np.float32)
    norms = np.einsum("ij,ij->i", reduced, reduced)
    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = np.random.default_rng(seed).integers(len(points))
    nearest = np.full(len(points), np.inf, dtype=np.float32)
    for step in range(count):
        if step:
            chosen[step] = int(np.argmax(nearest))
        centre = reduced[chosen[step]]
        distance = norms - 2.0 * (reduced @ centre) + norms[chosen[step]]
        np.minimum(nearest, distance, out=nearest)
    return chosen


def _min_sq_distances(queries: np.ndarray, bank: np.ndarray, bank_norms: np.ndarray,
                      chunk: int = 256) -> np.ndarray:
    """Squared distance of each query row to its nearest bank row (BLAS, bounded memory)."""
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d = bank_norms[None, :] - 2.0 * (q @ bank.T)
        out[start : start + chunk] = d.min(axis=1) + np.einsum("ij,ij->i", q, q)
    return np.maximum(out, 0.0)


@dataclass
class HeadConfig:
    """How a head is fitted. ``max_bytes`` bounds the saved file (the bank or Gaussians)."""

    kind: str = "padim"
    dim: int = 0  # random-projection width, 0: the kind's (DIMS); narrowed if over max_bytes
    max_bytes: int = 5_500_000
    bank_patches: int = 2048  # PatchCore coreset size (also capped by max_bytes)
    candidates: int = 40_000  # PatchCore: random subset of patches the coreset is chosen from
    covariance: str = "full"  # PaDiM
    epsilon: float = EPSILON  # PaDiM covariance regulariser
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HeadError(f"head kind must be one of {KINDS}, got {self.kind!r}")
        if self.covariance not in COVARIANCES:
            raise HeadError(f"covariance must be one of {COVARIANCES}")
        self.dim = self.dim or DIMS[self.kind]
        if self.dim < 1 or self.bank_patches < 1 or self.max_bytes < 1:
            raise HeadError("dim, bank_patches and max_bytes must be positive")


@dataclass
class Head:
    """A fitted head: arrays (saved as fp16 where precision allows) plus a few settings."""

    kind: str
    image_size: int
    grid: int
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    thresholds: Thresholds | None = None

    def __post_init__(self) -> None:
        self._prepared: dict[str, np.ndarray] = {}
        size = self.image_size
        smooth = _smooth_matrix(size, SMOOTH_SIGMA * size / 256)
        self._to_image = smooth @ _resize_matrix(size, self.grid)

    # ---- scoring
    def _prepare(self) -> dict[str, np.ndarray]:
        if not self._prepared:
            # the triangular whitening stays fp16 (5 MB, widened as it is read): a float32
            # copy would hold 10 MB more of the API's RAM per product its head serves
            a = {k: v if k == "precision_lower" else v.astype(np.float32)
                 for k, v in self.arrays.items()}
            if self.kind == "patchcore":
                a["bank_norms"] = np.einsum("ij,ij->i", a["bank"], a["bank"])
            self._prepared = a
        return self._prepared

    def patch_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, grid*grid) distances of projected patches to the normal model."""
        return self.projected_scores(embeddings @ self._prepare()["projection"])

    def projected_scores(self, x: np.ndarray) -> np.ndarray:
        """patch_scores of embeddings already projected by this head's projection."""
        a = self._prepare()
        if self.kind == "patchcore":
            flat = x.reshape(-1, x.shape[-1])
            return np.sqrt(_min_sq_distances(flat, a["bank"], a["bank_norms"])).reshape(
                x.shape[:2])
        centred = x - a["mean"][None]
        if "whiten" in a:  # shared: one whitening matrix for every position
            z = centred @ a["whiten"]
        elif "precision_lower" in a:  # full: per-position triangular whitening
            z = _lower_product(centred, a["precision_lower"])
        else:  # diagonal: per-position 1/sqrt(variance)
            z = centred * a["precision"][None]
        return np.sqrt(np.einsum("npd,npd->np", z, z))

    def maps(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S) smoothed anomaly maps at the input size and (N,) image scores."""
        return self.to_maps(self.patch_scores(embeddings))

    def to_maps(self, patch_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = patch_scores.reshape(-1, self.grid, self.grid)
        maps = np.einsum("Hh,nhw,Ww->nHW", self._to_image, scores, self._to_image,
                         optimize=True).astype(np.float32)
        return maps, maps.max(axis=(1, 2))

    @property
    def scoring_macs(self) -> int:
        """MACs of patch_scores and to_maps for one image, as they run: the projection, the
        whitening (or the nearest-neighbour search) per position, and the separable resize
        and smoothing of the grid to the input size."""
        a = self.arrays
        positions, (dim_in, dim) = self.grid * self.grid, a["projection"].shape
        if self.kind == "patchcore":
            compare = len(a["bank"]) * dim
        elif "precision" in a:  # diagonal
            compare = dim
        elif "whiten" in a:  # shared
            compare = dim * dim
        else:  # full: the triangle of each position's whitening
            compare = dim * (dim + 1) // 2
        return int(positions * (dim_in * dim + compare)) + self.map_macs

    @property
    def map_macs(self) -> int:
        """The separable resize and smoothing of the grid's scores to the input size."""
        size = self.image_size
        return int(size * self.grid * self.grid + size * size * self.grid)

    # ---- persistence
    def to_bytes(self) -> bytes:
        thresholds = self.thresholds.to_dict() if self.thresholds else None
        meta = {"kind": self.kind, "image_size": self.image_size, "grid": self.grid,
                "thresholds": thresholds, "meta": self.meta}
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **self.arrays)
        return buffer.getvalue()

    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    def save(self, path: str | os.PathLike[str]) -> int:
        data = self.to_bytes()
        atomic_write_bytes(Path(path), data)
        return len(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Head:
        try:
            with np.load(Path(path), allow_pickle=False) as npz:
                meta = json.loads(npz["__meta__"].tobytes())
                arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise HeadError(f"{path}: not a head file ({exc})") from exc
        thresholds = meta["thresholds"] and Thresholds.from_dict(meta["thresholds"])
        return cls(meta["kind"], meta["image_size"], meta["grid"], arrays, meta["meta"],
                   thresholds)


# ---------------------------------------------------------------- fitting
_OVERHEAD = 4096  # npz headers and the metadata


def bank_size(config: HeadConfig, dim_in: int) -> int:
    """Coreset size that keeps the file under ``max_bytes`` (fp16 bank + fp16 projection)."""
    dim = min(config.dim, dim_in)
    room = config.max_bytes - _OVERHEAD - 2 * dim_in * dim
    count = min(config.bank_patches, room // (2 * dim))
    if count < 1:
        raise HeadError(f"max_bytes={config.max_bytes} cannot hold a single patch")
    return int(count)


def fit_patchcore(batches: Iterable[np.ndarray], count: int, config: HeadConfig,
                  image_size: int, grid: int, dim_in: int) -> Head:
    """Coreset of the normal patches, chosen from a random subset of candidates (drawn
    batch by batch, so RAM holds the candidates, never every patch of every capture)."""
    proj = projection(dim_in, config.dim, config.seed)
    rng = np.random.default_rng(config.seed)
    parts = []
    for batch in batches:
        flat = batch.reshape(-1, dim_in)
        quota = -(-config.candidates * len(batch) // count)  # ceil
        if len(flat) > quota:
            flat = flat[rng.choice(len(flat), quota, replace=False)]
        parts.append(flat @ proj)
    candidates = np.concatenate(parts)
    chosen = greedy_k_center(candidates, bank_size(config, dim_in), config.seed)
    arrays = {"projection": proj.astype(np.float16),
              "bank": candidates[np.sort(chosen)].astype(np.float16)}
    return Head("patchcore", image_size, grid, arrays, {"patches": int(len(chosen))})


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """W with W W^T = cov^-1 (so ||(x - mu) W|| is the Mahalanobis distance)."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(np.maximum(values, 1e-12))[..., None, :]).astype(np.float32)


def _lower_inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """A lower-triangular W with W W^T = cov^-1 (the Cholesky factor of the inverse): the
    same distances as any other square root, and half its numbers are zeros that need not
    be stored. Should rounding leave cov not positive definite, the one from the clipped
    eigen-decomposition (QR of W^T makes it triangular)."""
    cov = cov.astype(np.float64)
    try:
        return np.linalg.cholesky(np.linalg.inv(cov)).astype(np.float32)
    except np.linalg.LinAlgError:
        r = np.linalg.qr(np.swapaxes(_inverse_sqrt(cov), -1, -2).astype(np.float64), mode="r")
        return np.swapaxes(r, -1, -2).astype(np.float32)


def _triangle_rows(dim: int) -> Iterator[tuple[int, slice]]:
    """(r, where row r's r + 1 entries lie) in a packed lower triangle (pack_lower)."""
    return ((r, slice(r * (r + 1) // 2, (r + 1) * (r + 2) // 2)) for r in range(dim))


def _lower_product(x: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """x @ W per position, for (N, P, d) x and lower-triangular W packed row by row with
    positions last ((d (d + 1) / 2, P), as a head stores it): row r of W contributes
    x[..., r] * W[r, :r + 1], so d (d + 1) / 2 multiply-adds per position and no square
    matrix is made. One image at a time (its (d, P) rows stay in cache), positions
    innermost, so every step is one contiguous vector operation."""
    count, positions, dim = x.shape
    out = np.empty_like(x)
    term, z = np.empty((dim, positions), np.float32), np.empty((dim, positions), np.float32)
    for image in range(count):
        rows = np.ascontiguousarray(x[image].T)
        z[:] = 0.0
        for r, entries in _triangle_rows(dim):
            np.multiply(rows[r : r + 1], packed[entries], out=term[: r + 1])
            z[: r + 1] += term[: r + 1]
        out[image] = z.T
    return out


def pack_lower(square: np.ndarray) -> np.ndarray:
    """(..., d, d) lower-triangular -> (..., d (d + 1) / 2), row by row."""
    rows, cols = np.tril_indices(square.shape[-1])
    return square[..., rows, cols]


def unpack_lower(packed: np.ndarray) -> np.ndarray:
    """pack_lower's inverse: the zeros above the diagonal come back."""
    dim = int((math.isqrt(8 * packed.shape[-1] + 1) - 1) // 2)
    square = np.zeros((*packed.shape[:-1], dim, dim), packed.dtype)
    rows, cols = np.tril_indices(dim)
    square[..., rows, cols] = packed
    return square


def padim_dim(config: HeadConfig, dim_in: int, positions: int) -> int:
    """Widest projection whose Gaussians fit ``max_bytes`` in fp16."""
    dim = min(config.dim, dim_in)
    room = config.max_bytes - _OVERHEAD

    def size(d: int) -> int:
        per_position = {"full": d * (d + 1) // 2, "diagonal": d, "shared": 0}[config.covariance]
        shared = d * d if config.covariance == "shared" else 0
        return 2 * (positions * (d + per_position) + shared + dim_in * d)

    while dim > 1 and size(dim) > room:
        dim -= 1
    if size(dim) > room:
        raise HeadError(f"max_bytes={config.max_bytes} cannot hold the Gaussians")
    return dim


_CHUNK = 128  # positions at a time for per-position matrices: temporaries stay a few MB


def _position_chunks(positions: int) -> Iterator[slice]:
    return (slice(start, start + _CHUNK) for start in range(0, positions, _CHUNK))


@dataclass
class PadimSums:
    """The count and the float64 sums of projected x and x x^T that a PaDiM head is made
    from. Sums subtract: the head without some captures is the total minus their sums, so
    cross-fitting needs no refit from the images. Per position (``full``), x x^T is kept as
    its packed lower triangle: at 62 dimensions 20 MB instead of 40 per set of sums."""

    covariance: str
    count: int = 0
    first: np.ndarray | float = 0.0
    second: np.ndarray | float = 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.count += len(x)
        self.first = self.first + x.sum(axis=0)
        if self.covariance == "shared":
            flat = x.reshape(-1, x.shape[-1])
            self.second = self.second + flat.T @ flat
        elif self.covariance == "diagonal":
            self.second = self.second + (x * x).sum(axis=0)
        else:
            positions, dim = x.shape[1:]
            if np.isscalar(self.second):  # else an array of these sums' own (added in place)
                self.second = np.zeros((positions, dim * (dim + 1) // 2))
            outer = np.empty((_CHUNK, dim, dim))  # reused: one allocation per batch
            for part in _position_chunks(positions):
                n = len(range(positions)[part])
                np.matmul(x[:, part].transpose(1, 2, 0), x[:, part].transpose(1, 0, 2),
                          out=outer[:n])
                second = self.second[part]
                for row, entries in _triangle_rows(dim):
                    second[:, entries] += outer[:n, row, : row + 1]

    def __add__(self, other: PadimSums) -> PadimSums:
        return PadimSums(self.covariance, self.count + other.count, self.first + other.first,
                         self.second + other.second)

    def __sub__(self, other: PadimSums) -> PadimSums:
        return PadimSums(self.covariance, self.count - other.count, self.first - other.first,
                         self.second - other.second)


@dataclass
class PadimMoments:
    """Projected per-position means and covariances (without epsilon): what PaDiM learns,
    kept in fp32 so tasks can be averaged (CLAD supplement, Algorithm 1)."""

    projection: np.ndarray
    mean: np.ndarray  # (P, d)
    cov: np.ndarray  # full (P, d, d), shared (d, d) or diagonal (P, d)
    covariance: str

    @classmethod
    def of(cls, embeddings: np.ndarray, proj: np.ndarray, covariance: str) -> PadimMoments:
        return cls.of_batches([embeddings], proj, covariance)

    @classmethod
    def of_batches(cls, batches: Iterable[np.ndarray], proj: np.ndarray,
                   covariance: str) -> PadimMoments:
        """Sums of x and x x^T in float64, batch by batch: RAM does not grow with the
        number of captures."""
        sums = PadimSums(covariance)
        for batch in batches:
            sums.add(batch @ proj)
        return cls.of_sums(sums, proj)

    @classmethod
    def of_sums(cls, sums: PadimSums, proj: np.ndarray) -> PadimMoments:
        count, first, second = sums.count, sums.first, sums.second
        if not count:
            raise HeadError("a head needs at least one image")
        mean = first / count
        if sums.covariance == "shared":
            positions = mean.shape[0]
            cov = (second - count * mean.T @ mean) / max(count * positions - 1, 1)
        elif sums.covariance == "diagonal":
            cov = (second - count * mean * mean) / max(count - 1, 1)
        else:  # from the packed triangle, a chunk of positions at a time
            positions, dim = mean.shape
            cov = np.empty((positions, dim, dim), np.float32)
            for part in _position_chunks(positions):
                square = unpack_lower(second[part])
                square += np.swapaxes(np.tril(square, -1), -1, -2)
                square -= count * np.einsum("pd,pe->pde", mean[part], mean[part])
                cov[part] = square / max(count - 1, 1)
        return cls(proj, mean.astype(np.float32), cov.astype(np.float32, copy=False),
                   sums.covariance)

    def average(self, other: PadimMoments, tasks_so_far: int) -> PadimMoments:
        """M <- M * i/(i+1) + M_i/(i+1), the same for the covariance (i tasks so far)."""
        keep, new = tasks_so_far / (tasks_so_far + 1), 1 / (tasks_so_far + 1)
        return PadimMoments(self.projection, self.mean * keep + other.mean * new,
                            self.cov * keep + other.cov * new, self.covariance)

    def head(self, epsilon: float, image_size: int, grid: int) -> Head:
        dim = self.mean.shape[-1]
        arrays = {"projection": self.projection.astype(np.float16),
                  "mean": self.mean.astype(np.float16)}
        if self.covariance == "diagonal":
            arrays["precision"] = (1.0 / np.sqrt(self.cov + epsilon)).astype(np.float16)
        elif self.covariance == "shared":
            cov = self.cov + epsilon * np.eye(dim, dtype=np.float32)
            arrays["whiten"] = _inverse_sqrt(cov).astype(np.float16)
        else:  # per position: the lower triangle of a triangular whitening, packed
            ridge = epsilon * np.eye(dim, dtype=np.float32)
            packed = np.empty((dim * (dim + 1) // 2, len(self.cov)), np.float16)
            for part in _position_chunks(len(self.cov)):
                packed[:, part] = pack_lower(_lower_inverse_sqrt(self.cov[part] + ridge)).T
            arrays["precision_lower"] = packed
        return Head("padim", image_size, grid, arrays, {"covariance": self.covariance,
                                                         "dim": dim, "whitening": WHITENING})


def fit_padim(batches: Iterable[np.ndarray], count: int, config: HeadConfig,
              image_size: int, grid: int, dim_in: int) -> Head:
    """Per-position means, and full / shared / diagonal covariances (+ epsilon I)."""
    proj = projection(dim_in, padim_dim(config, dim_in, grid * grid), config.seed)
    moments = PadimMoments.of_batches(batches, proj, config.covariance)
    return moments.head(config.epsilon, image_size, grid)


def fit_head(embeddings: np.ndarray, config: HeadConfig, image_size: int, grid: int) -> Head:
    """Fit on (N, grid*grid, D) embeddings of normal images; raises if over budget."""
    return fit_head_batches([embeddings], len(embeddings), embeddings.shape[-1], config,
                            image_size, grid)


def fit_head_batches(batches: Iterable[np.ndarray], count: int, dim_in: int,
                     config: HeadConfig, image_size: int, grid: int) -> Head:
    """Fit on ``count`` images' embeddings arriving in batches (e.g. straight from
    FeatureRunner.embed_batches), never all in RAM at once; raises if over budget."""
    fit = fit_patchcore if config.kind == "patchcore" else fit_padim
    return _checked(fit(batches, count, config, image_size, grid, dim_in), count, config)


def _checked(head: Head, count: int, config: HeadConfig) -> Head:
    head.meta |= {"images": int(count), "seed": config.seed, "embedding": EMBEDDING,
                  "epsilon": config.epsilon}
    if head.nbytes > config.max_bytes:
        raise HeadError(f"head of {head.nbytes} bytes exceeds max_bytes={config.max_bytes}")
    return head


class TaskBanks:
    """PatchCore for continual learning (CLAD supplement, Algorithm 2), task-agnostic: one
    coreset per task, all shrunk to ``memory_patches / tasks`` as tasks arrive; at test
    time, per image, the task whose coreset gives the lowest mean patch distance answers."""

    def __init__(self, config: HeadConfig, memory_patches: int, image_size: int,
                 grid: int) -> None:
        self.config, self.memory_patches = config, memory_patches
        self.image_size, self.grid = image_size, grid
        self.banks: list[Head] = []

    def add_task(self, embeddings: np.ndarray) -> None:
        share = self.memory_patches // (len(self.banks) + 1)
        for bank in self.banks:
            rows = bank.arrays["bank"]
            keep = greedy_k_center(rows.astype(np.float32), share, self.config.seed)
            bank.arrays["bank"] = rows[np.sort(keep)]
            bank._prepared = {}
        config = HeadConfig(kind="patchcore", dim=self.config.dim, bank_patches=share,
                            max_bytes=2**62, candidates=self.config.candidates,
                            seed=self.config.seed)
        self.banks.append(fit_head(embeddings, config, self.image_size, self.grid))

    @property
    def nbytes(self) -> int:
        return sum(bank.nbytes for bank in self.banks)

    @property
    def scoring_macs(self) -> int:
        """Every task's bank scores every patch; one map is made of the chosen scores."""
        maps = self.banks[0].map_macs
        return sum(bank.scoring_macs - maps for bank in self.banks) + maps

    def maps(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.stack([bank.patch_scores(embeddings) for bank in self.banks])
        task = scores.mean(axis=2).argmin(axis=0)
        return self.banks[0].to_maps(scores[task, np.arange(len(task))])


def calibrate_head(head: Head, val_embeddings: np.ndarray,
                   out_of_fold: np.ndarray | None = None) -> Thresholds:
    """Thresholds from held-out normal captures, the rule the student's thresholds use,
    plus ``out_of_fold`` scores of the fitted captures when there are (fit_cross_fitted)."""
    maps, scores = head.maps(val_embeddings)
    if out_of_fold is not None:
        scores = np.concatenate([scores, out_of_fold])
    head.thresholds = calibrate(maps, scores)
    return head.thresholds


CROSS_FIT_FOLDS = 5
MIN_CROSS_FIT = 4 * CROSS_FIT_FOLDS  # fewer fitted captures: fold heads of 3 images say little


def fit_cross_fitted(stream: Callable[[np.ndarray], Iterable[np.ndarray]], count: int,
                     dim_in: int, config: HeadConfig, image_size: int, grid: int,
                     folds: int = CROSS_FIT_FOLDS) -> tuple[Head, np.ndarray | None]:
    """A head fitted on ``count`` captures, and each capture's image score from a head
    fitted without its fold (None below MIN_CROSS_FIT: the held-out captures then calibrate
    alone). ``stream(indices)`` yields those captures' embeddings in order (from the images
    in the fit child, from RAM in benchmarks).

    A head is cheap to fit, so its threshold need not rest on the ~20 held-out captures
    alone: with 200 normal scores the false-reject promise is an order statistic instead of
    a log-normal extrapolation, and it no longer moves with which captures were held out.
    Scored by heads fitted on 80% of the captures, they err high, i.e. on the safe side.
    PaDiM reads the captures twice (a fold's head is the total's sums minus the fold's);
    PatchCore fits one coreset per fold, reading them 1 + 2 x folds times."""
    if config.kind == "padim":
        return _padim_cross_fitted(stream, count, dim_in, config, image_size, grid, folds)
    head = fit_head_batches(stream(np.arange(count)), count, dim_in, config, image_size, grid)
    if count < MIN_CROSS_FIT:
        return head, None
    fold = np.arange(count) % folds
    scores = np.empty(count, np.float32)
    for k in range(folds):
        rest, mine = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        without = fit_head_batches(stream(rest), len(rest), dim_in, config, image_size, grid)
        scores[mine] = np.concatenate([without.maps(batch)[1] for batch in stream(mine)])
    return head, scores


def _padim_cross_fitted(stream: Callable[[np.ndarray], Iterable[np.ndarray]], count: int,
                        dim_in: int, config: HeadConfig, image_size: int, grid: int,
                        folds: int) -> tuple[Head, np.ndarray | None]:
    """The sums of every capture, then fold by fold: that fold's captures (read the second
    time), the head of the total minus their sums, their scores. One fold's sums, captures
    and head are in RAM at a time, the captures projected (a third of their bytes; by the
    projection as stored, fp16, so that they score as the fold's head would score them)."""
    proj = projection(dim_in, padim_dim(config, dim_in, grid * grid), config.seed)
    proj = proj.astype(np.float16).astype(np.float32)
    total = PadimSums(config.covariance)
    for embeddings in stream(np.arange(count)):
        total.add(embeddings @ proj)
    if total.count != count:
        raise HeadError(f"expected {count} captures' embeddings, got {total.count}")
    head = _checked(PadimMoments.of_sums(total, proj).head(config.epsilon, image_size, grid),
                    count, config)
    if count < MIN_CROSS_FIT:
        return head, None
    scores = np.empty(count, np.float32)
    for k in range(folds):
        rows = np.flatnonzero(np.arange(count) % folds == k)
        mine, projected = PadimSums(config.covariance), []
        for embeddings in stream(rows):
            projected.append(embeddings @ proj)
            mine.add(projected[-1])
        rest = total - mine
        del mine  # one set of sums besides the total
        without = PadimMoments.of_sums(rest, proj).head(config.epsilon, image_size, grid)
        del rest
        scores[rows] = np.concatenate([without.to_maps(without.projected_scores(x))[1]
                                       for x in projected])
    return head, scores


def holdout_split(count: int, fraction: float = 0.1,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The student's split (training.loop.holdout_split, which lives beside torch)."""
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * fraction))
    if fraction > 0 and count >= 4:
        held = max(held, 1)
    return np.sort(order[held:]), np.sort(order[:held])


# ---------------------------------------------------------------- serving
class HeadInferencer(AnomalyInferencer):
    """The features graph and a head in place of the merged student graph: the same
    load -> preprocess -> forward -> predict path, so the verdict is decided alike."""

    def __init__(self, runner: FeatureRunner, head: Head | TaskBanks) -> None:
        if head.grid != runner.grid or head.image_size != runner.image_size:
            raise HeadError("head was fitted on another feature grid or image size")
        self.runner, self.head = runner, head
        self.image_size = runner.image_size
        self.session = runner.session

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.head.maps(self.runner.embed(batch))
        return maps[:, None], scores
