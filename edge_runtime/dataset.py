"""MVTec-AD-layout discovery: category/train/good, category/test/<kind>, ground_truth masks.

Defect folder names differ between data sets, so they are discovered, never listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class TestSample:
    image: Path
    defect: str  # "good" for normal images
    mask: Path | None

    @property
    def is_anomalous(self) -> bool:
        return self.defect != "good"


def spread(items: list, limit: int | None) -> list:
    """An evenly spaced, deterministic subset of at most ``limit`` items (all if None/0)."""
    if not limit or limit <= 0 or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def list_categories(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist")
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def _category_dir(root: Path, category: str) -> Path:
    directory = Path(root) / category
    if not (directory / "train" / "good").is_dir():
        known = ", ".join(list_categories(root)) or "none"
        raise FileNotFoundError(
            f"no category {category!r} under {root} (expected {category}/train/good; "
            f"found: {known})"
        )
    return directory


def train_images(root: Path, category: str, limit: int | None = None) -> list[Path]:
    """Defect-free training images, sorted; ``limit`` keeps an evenly spaced subset."""
    return spread(_images(_category_dir(root, category) / "train" / "good"), limit)


def _mask_for(directory: Path, defect: str, image: Path) -> Path | None:
    if defect == "good":
        return None
    for candidate in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        path = directory / "ground_truth" / defect / candidate
        if path.is_file():
            return path
    return None


def test_samples(root: Path, category: str, limit: int | None = None) -> list[TestSample]:
    """Test images of every kind; ``limit`` keeps an evenly spaced subset per kind."""
    directory = _category_dir(root, category)
    samples: list[TestSample] = []
    for kind_dir in sorted(p for p in (directory / "test").iterdir() if p.is_dir()):
        images = spread(_images(kind_dir), limit)
        samples += [TestSample(i, kind_dir.name, _mask_for(directory, kind_dir.name, i))
                    for i in images]
    return samples
