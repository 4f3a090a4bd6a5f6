"""Command line: ``edge-runtime fit | inspect | serve``.

torch is imported only by the commands that train; ``inspect`` and ``serve`` run on ORT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from edge_runtime.inference.model_dir import ModelDirError
from edge_runtime.inference.preprocess import ImageError
from edge_runtime.model.weights import WeightsNotFoundError

USER_ERRORS = (ImageError, ModelDirError, WeightsNotFoundError, FileNotFoundError, ValueError)


def _bar_callback(bar: tqdm):
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def cmd_fit(args: argparse.Namespace) -> int:
    from edge_runtime.dataset import train_images
    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.model.weights import resolve_backbone_files
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import Hooks, calibration_policy, learn_product

    build = ModelSpec.stfpm if args.mode == "stfpm" else ModelSpec.paste
    spec = build(recipe=args.recipe)
    images = train_images(Path(args.data), args.category, args.max_images)
    bundle = ModelBundle(spec, resolve_backbone_files(args.weights_dir), args.seed, args.threads)
    fixed = {"epochs": args.epochs, "target_steps": 0} if args.epochs else {}
    config = TrainConfig.for_recipe(args.recipe, seed=args.seed, **fixed)
    trainer = ContinualTrainer(bundle, "finetune", config=config)
    with tqdm(desc="trunk features", unit="img") as features, \
            tqdm(desc="training", unit="step") as steps:

        def on_progress(p) -> None:
            steps.total = p.epochs * p.steps
            steps.n = (p.epoch - 1) * p.steps + p.step
            steps.set_postfix(epoch=p.epoch, loss=f"{p.loss:.4f}",
                              val=f"{p.val_loss:.4f}" if p.val_loss is not None else "-")

        learned = learn_product(trainer, args.category, images, args.out,
                                training_info={"category": args.category},
                                hooks=Hooks(features=_bar_callback(features),
                                            progress=on_progress),
                                policy=calibration_policy(args.recipe))
    thresholds = learned.thresholds[args.category]
    if thresholds.warning:
        print(f"edge-runtime: warning: {thresholds.warning}", file=sys.stderr)
    result = learned.result
    training = {"category": args.category, "images": len(images),
                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 2)}
    summary = {"model": str(learned.directory), "training": training,
               "thresholds": thresholds.to_dict()}
    if args.evaluate:
        summary["metrics"] = _evaluate(learned.directory, args, thresholds)
    print(json.dumps(summary))
    return 0


def _evaluate(model: Path, args: argparse.Namespace, thresholds) -> dict:
    from edge_runtime.evaluation.evaluate import evaluate

    _, inferencer = _inferencer(model, args.threads)
    with tqdm(desc="evaluating", unit="img") as bar:
        return evaluate(inferencer, args.data, args.category, thresholds=thresholds,
                        progress=_bar_callback(bar))


def _inferencer(model: Path, threads: int):
    from edge_runtime.inference import model_dir as md
    from edge_runtime.inference.inferencer import AnomalyInferencer

    manifest = md.read_manifest(model)
    return manifest, AnomalyInferencer(Path(model) / md.MERGED, manifest.image_size, threads)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edge_runtime.inference.overlay import overlay_png, verdict_overlay_png

    manifest, inferencer = _inferencer(args.model, args.threads)
    product = args.product or next(iter(manifest.thresholds), None)
    thresholds = manifest.thresholds.get(product) if product else None
    rgb = inferencer.load(args.image)
    prediction = inferencer.predict(rgb, thresholds)
    report: dict = {"image": str(args.image), "score": prediction.score}
    if thresholds:
        report |= {"product": product, "threshold": thresholds.image,
                   "verdict": prediction.label}
    if args.out:
        png = (verdict_overlay_png(rgb, prediction.anomaly_map, thresholds.image,
                                   prediction.score, prediction.label) if thresholds
               else overlay_png(rgb, prediction.anomaly_map))
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
    fit.add_argument("--recipe", choices=["new", "paper"], default="new",
                     help="new: schedule, map and calibration chosen on validation data; "
                          "paper: the papers' (10 epochs, max-pixel score, 1.1 x q99)")
    fit.add_argument("--epochs", type=int, default=None,
                     help="fixed epochs (default: paper 10; new: about 1000 steps)")
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
