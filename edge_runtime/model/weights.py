"""Find the MCUNet-in3 config and ImageNet weights.

Order: an explicit directory (argument or EDGE_RUNTIME_WEIGHTS_DIR), the mcunet cache
(~/.torch/mcunet/), then a download through mcunet's own URL into that cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NET_NAME = "mcunet-320kb-1mb_imagenet"
CONFIG_FILE = f"{NET_NAME}.json"
WEIGHTS_FILE = f"{NET_NAME}.pth"
ENV_VAR = "EDGE_RUNTIME_WEIGHTS_DIR"
MCUNET_CACHE = Path("~/.torch/mcunet").expanduser()


class WeightsNotFoundError(RuntimeError):
    """The backbone files are nowhere to be found and could not be downloaded."""


@dataclass(frozen=True)
class BackboneFiles:
    config: Path
    weights: Path


def _in_dir(directory: Path) -> BackboneFiles | None:
    files = BackboneFiles(directory / CONFIG_FILE, directory / WEIGHTS_FILE)
    return files if files.config.is_file() and files.weights.is_file() else None


def _download() -> BackboneFiles | None:
    try:
        from mcunet.model_zoo import url_base
        from mcunet.utils import download_url
    except ImportError:
        return None
    try:
        config = download_url(url_base + CONFIG_FILE, model_dir=str(MCUNET_CACHE))
        weights = download_url(url_base + WEIGHTS_FILE, model_dir=str(MCUNET_CACHE))
    except Exception:  # noqa: BLE001 - any network failure means "not available"
        return None
    return _in_dir(Path(config).parent) if config and weights else None


def resolve_backbone_files(
    explicit: str | os.PathLike[str] | None = None, allow_download: bool = True
) -> BackboneFiles:
    """Return the config and weights paths, or fail with one message saying where to put them."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit).expanduser())
    elif os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]).expanduser())
    candidates.append(MCUNET_CACHE)
    for directory in candidates:
        found = _in_dir(directory)
        if found:
            return found
    if allow_download:
        found = _download()
        if found:
            return found
    looked = ", ".join(str(c) for c in candidates)
    raise WeightsNotFoundError(
        f"MCUNet-in3 files not found (looked in: {looked}; download failed or disabled). "
        f"Put {CONFIG_FILE} and {WEIGHTS_FILE} in one directory and point "
        f"{ENV_VAR} (or the 'weights_dir' setting) at it, or copy them to {MCUNET_CACHE}."
    )
