"""Command line: ``edge-runtime fit | inspect | serve``.

torch is imported only by the commands that train; ``inspect`` and ``serve`` run on ORT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from edge_runtime.model_dir import ModelDirError
from edge_runtime.preprocess import ImageError
from edge_runtime.weights import WeightsNotFoundError

USER_ERRORS = (ImageError, ModelDirError, WeightsNotFoundError, FileNotFoundError, ValueError)


def _bar_callback(bar: tqdm):
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def cmd_fit(args: argparse.Namespace) -> int:
    from edge_runtime import model_dir as md
    from edge_runtime.dataset import train_images
    from edge_runtime.engine import Engine, calibrate_product
    from edge_runtime.torch_model import ModelSpec
    from edge_runtime.training import TrainConfig, holdout_split
    from edge_runtime.weights import resolve_backbone_files

    spec = ModelSpec.stfpm() if args.mode == "stfpm" else ModelSpec.paste()
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    images = train_images(Path(args.data), args.category, args.max_images)
    train_idx, val_idx = holdout_split(len(images), config.val_fraction, config.seed)
    engine = Engine(spec, resolve_backbone_files(args.weights_dir), args.seed, args.threads)
    with tqdm(desc="trunk features", unit="img") as bar:
        features = engine.features(images, _bar_callback(bar))
    with tqdm(desc="training", unit="step") as bar:

        def on_progress(p) -> None:
            bar.total = p.epochs * p.steps
            bar.n = (p.epoch - 1) * p.steps + p.step
            bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.4f}",
                            val=f"{p.val_loss:.4f}" if p.val_loss is not None else "-")

        result = engine.train(features[train_idx], features[val_idx], config,
                              on_progress=on_progress)
    training = {"category": args.category, "images": len(images), "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch, "seconds": round(result.seconds, 2)}
    out = engine.save(args.out, training=training)
    thresholds = calibrate_product(out, [images[i] for i in val_idx], args.threads)
    md.update_products(out, {args.category: {"thresholds": thresholds}})
    summary = {"model": str(out), "training": training, "thresholds": thresholds}
    if args.evaluate:
        summary["metrics"] = _evaluate(out, args, thresholds)
    print(json.dumps(summary))
    return 0


def _evaluate(model: Path, args: argparse.Namespace, thresholds: dict) -> dict:
    from edge_runtime import model_dir as md
    from edge_runtime.evaluation import evaluate
    from edge_runtime.inferencer import AnomalyInferencer

    size = md.read_manifest(model).spec["image_size"]
    inferencer = AnomalyInferencer(model / md.MERGED, size, args.threads)
    with tqdm(desc="evaluating", unit="img") as bar:
        return evaluate(inferencer, args.data, args.category, thresholds=thresholds,
                        progress=_bar_callback(bar))


def cmd_inspect(args: argparse.Namespace) -> int:
    from edge_runtime import model_dir as md
    from edge_runtime.inferencer import AnomalyInferencer
    from edge_runtime.overlay import overlay_png
    from edge_runtime.preprocess import load_rgb

    manifest = md.read_manifest(args.model)
    size = manifest.spec["image_size"]
    inferencer = AnomalyInferencer(Path(args.model) / md.MERGED, size, args.threads)
    result = inferencer.inspect(args.image)
    product = args.product or next(iter(manifest.products), None)
    thresholds = manifest.products.get(product, {}).get("thresholds") if product else None
    report: dict = {"image": str(args.image), "score": result.score}
    vmax = None
    if thresholds:
        vmax = 2 * thresholds["pixel"]
        report |= {"product": product, "threshold": thresholds["image"],
                   "verdict": "reject" if result.score > thresholds["image"] else "pass"}
    if args.out:
        png = overlay_png(load_rgb(args.image, size), result.anomaly_map, vmax)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(png)
        report["map"] = str(args.out)
    print(json.dumps(report))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from edge_runtime.server import serve

    return serve(args.config, args.data_dir, args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train the student on one category's normal images")
    fit.add_argument("--data", required=True, help="MVTec-layout root")
    fit.add_argument("--category", required=True)
    fit.add_argument("--out", required=True, help="model directory to write")
    fit.add_argument("--epochs", type=int, default=10)
    fit.add_argument("--max-images", type=int, default=None)
    fit.add_argument("--mode", choices=["paste", "stfpm"], default="paste")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, default=0, help="0 = one per core")
    fit.add_argument("--weights-dir", default=None, help="folder with the MCUNet-in3 files")
    fit.add_argument("--evaluate", action="store_true", help="score the category's test set")
    fit.set_defaults(func=cmd_fit)

    inspect = sub.add_parser("inspect", help="anomaly map and score of one image")
    inspect.add_argument("image")
    inspect.add_argument("--model", required=True, help="model directory from 'fit'")
    inspect.add_argument("--out", default=None, help="PNG with the heat map overlaid")
    inspect.add_argument("--product", default=None, help="whose threshold gives the verdict")
    inspect.add_argument("--threads", type=int, default=0)
    inspect.set_defaults(func=cmd_inspect)

    serve = sub.add_parser("serve", help="run the daemon (HTTP API)")
    serve.add_argument("--config", default=None)
    serve.add_argument("--data-dir", default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
