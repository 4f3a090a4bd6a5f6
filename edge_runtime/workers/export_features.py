"""Write the features graph (trunk + frozen teacher tail) once per data directory.

Run as a child process by the API, which never imports torch: the graph depends on the
ImageNet weights only, so a product's memory-bank head can be fitted before any student.
Its MACs per image go beside it (``<graph>.json``, written first), since counting them
needs torch too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)
    import torch

    from edge_runtime.atomic import atomic_write_bytes
    from edge_runtime.model.macs import features_graph_macs
    from edge_runtime.model.onnx_export import export_features
    from edge_runtime.model.torch_model import ModelSpec, build_parts
    from edge_runtime.model.weights import resolve_backbone_files

    torch.set_num_threads(1)
    spec = ModelSpec.paste(args.image_size)
    trunk, teacher, _ = build_parts(spec, resolve_backbone_files(args.weights_dir or None))
    macs = features_graph_macs(trunk, teacher, spec.image_size)
    atomic_write_bytes(Path(args.out).with_suffix(".json"), json.dumps({"macs": macs}).encode())
    export_features(trunk, teacher, spec.feature_layers, spec.image_size, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
