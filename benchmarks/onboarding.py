"""Onboarding a new product: memory-bank heads against the trained student, per category.

For each category: the captures (train/good, at most --max-images, the CLI's split: 90 %
fitted, 10 % held out for the thresholds) are files on disk; the clock starts when the last
one is stored and stops at the first verdict of a test image from the default head
(features of every capture through ORT, fit, calibration, one inspection). The other head
kinds are fitted on the same embeddings (their first verdict = the default head's
embedding time + their own fit, calibration and inspection). Every head and the student
are scored on the same test images with edge_runtime.metrics; 'ensemble' averages the
head's and the student's maps, each divided by its own pixel threshold. Latency: one image,
batch 1, median over --repeats, the head through the features graph, the student through
the merged graph.

``--daemon`` measures only that clock, through a real daemon (HTTP uploads, the head fitted by
the API process, then /inspect until it answers).

The student is trained here like ``edge-runtime fit`` does, or read from
``--students DIR`` (``DIR/<category>`` written by ``edge-runtime fit --max-images N``
with the same N and seed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, SHARED, emit_json, print_table
from tqdm import tqdm

from edge_runtime.dataset import test_samples, train_images
from edge_runtime.evaluation import metrics
from edge_runtime.inference import heads as H
from edge_runtime.inference import model_dir as md
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.preprocess import load_mask, preprocess

CATEGORIES = ["bottle", "transistor", "magnetic_tile"]
DEFAULT = H.HeadConfig()
ALTERNATIVES = {
    "padim/full": DEFAULT,
    "padim/shared": H.HeadConfig(kind="padim", covariance="shared", dim=100),
    "padim/diagonal": H.HeadConfig(kind="padim", covariance="diagonal", dim=160),
    "patchcore": H.HeadConfig(kind="patchcore", dim=64, bank_patches=2048),
}


def _median_ms(forwards: dict, repeats: int) -> dict[str, float]:
    """Median ms per forward; rounds interleave the models so that the other agents' load
    on the shared cores hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for round_ in range(repeats + 2):
        for name, fn in forwards.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:  # warm-up
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


def _maps(inferencer, images: list[Path], desc: str) -> tuple[np.ndarray, np.ndarray]:
    maps, scores = [], []
    for start in tqdm(range(0, len(images), 8), desc=desc, leave=False):
        for result in inferencer.predict_many(images[start : start + 8]):
            maps.append(result.anomaly_map)
            scores.append(result.score)
    return np.stack(maps), np.array(scores)


def _scores(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray,
            pixel_threshold: float) -> dict:
    return {"pixel_auroc": metrics.auroc(masks, maps), "image_auroc": metrics.auroc(labels, scores),
            "pixel_f1": metrics.f1_max(masks, maps), "aupro": metrics.aupro(masks, maps),
            "operational_pixel_f1": metrics.f1_at(masks, maps, pixel_threshold)}


def _student(category: str, images: list[Path], args) -> Path:
    """A model directory trained as ``edge-runtime fit`` trains it (or the given one)."""
    if args.students:
        return args.students / category
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import Hooks, learn_product

    bundle = ModelBundle(seed=0, threads=args.threads)
    trainer = ContinualTrainer(bundle, "finetune", config=TrainConfig(epochs=args.epochs, seed=0))
    with tqdm(desc=f"student {category}", unit="step", leave=False) as bar:
        def progress(p) -> None:
            bar.total, bar.n = p.epochs * p.steps, (p.epoch - 1) * p.steps + p.step
            bar.refresh()
        learned = learn_product(trainer, category, images, args.out / "students" / category,
                                hooks=Hooks(progress=progress))
    return learned.directory


def features_graph(path: Path, image_size: int = 256) -> Path:
    """The features graph (trunk + frozen teacher tail), exported once per installation."""
    if not path.exists():
        from edge_runtime.model.onnx_export import export_features
        from edge_runtime.model.torch_model import ModelSpec, build_parts

        spec = ModelSpec.paste(image_size)
        trunk, teacher, _ = build_parts(spec)
        export_features(trunk, teacher, spec.feature_layers, spec.image_size, path)
    return path


def daemon_first_verdict(category: str, args) -> list[dict]:
    """The same clock through a real daemon: POST the captures (32 per request), then
    inspect until a head answers (one fitted on the captures stored so far: each request
    queues a refit), and until the head fitted on all of them answers. The features graph
    is exported beforehand (a first product also pays its export, a few seconds, once per
    data directory)."""
    from edge_runtime.daemon_process import Daemon

    images = train_images(args.data, category, args.max_images)
    probe = test_samples(args.data, category, 1)[0].image
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "heads").mkdir(parents=True)
        features_graph(data / "heads" / H.FEATURES)
        daemon = Daemon(data, env={"EDGE_RUNTIME_MODEL_THREADS": str(args.threads)})
        daemon.start(timeout=120)
        try:
            product = daemon.client.post("/products", json={"name": category}).json()["id"]
            for start in range(0, len(images), 32):
                response = daemon.upload(product, images[start : start + 32])
                assert response.status_code == 201, response.text
            stored = time.perf_counter()
            while True:
                answer = daemon.inspect(product, probe)
                if answer.status_code == 200:
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - stored
            while True:  # that head may be one fitted on the captures of earlier requests
                state = daemon.client.get(f"/products/{product}/head").json()
                if state["status"] == "ready" and state["captures"] == len(images):
                    break
                time.sleep(0.05)
            assert daemon.inspect(product, probe).status_code == 200
            complete = time.perf_counter() - stored
            rss = daemon.client.get("/status").json()["rss_mb"]
        finally:
            daemon.stop()
    return [{"category": category, "model": "daemon", "first_verdict_seconds": seconds,
             "all_captures_verdict_seconds": complete,
            "head_bytes": state["bytes"], "fit_seconds": state["fit_seconds"],
            "first_verdict": answer.json()["verdict"], "api_rss_mb": rss}]


def run_category(category: str, graph: Path, args) -> list[dict]:
    images = train_images(args.data, category, args.max_images)
    train, val = H.holdout_split(len(images))
    student_dir = _student(category, images, args)
    samples = test_samples(args.data, category, args.max_test_images)
    test = [s.image for s in samples]
    masks = np.stack([load_mask(s.mask, 256) for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    runner = H.FeatureRunner(graph, 256, args.threads)

    # the clock: last capture stored -> first verdict of the default head
    started = time.perf_counter()
    embeddings = runner.embed_sources(images)
    embed_seconds = time.perf_counter() - started
    rows: list[dict] = []
    batch = preprocess(test[0], 256)[None]
    forwards = {}
    for name, config in ALTERNATIVES.items():
        begun = time.perf_counter()
        head = H.fit_head(embeddings[train], config, 256, runner.grid)
        fit_seconds = time.perf_counter() - begun
        thresholds = H.calibrate_head(head, embeddings[val])
        inferencer = H.HeadInferencer(runner, head)
        result = inferencer.predict(test[0])
        verdict = thresholds.verdict(result.score)
        first = embed_seconds + time.perf_counter() - begun
        forwards[name] = lambda inf=inferencer, b=batch: inf.forward(b)
        maps, scores = _maps(inferencer, test, f"{category} {name}")
        if config is DEFAULT:
            head_maps = (maps, thresholds)
        rows.append({"category": category, "model": name, "fit_seconds": fit_seconds,
                     "first_verdict_seconds": first, "first_verdict": verdict,
                     "head_bytes": head.nbytes}
                    | _scores(maps, scores, masks, labels, thresholds.pixel))
    manifest = md.read_manifest(student_dir)
    thresholds = manifest.thresholds[category]
    student = AnomalyInferencer(student_dir / md.MERGED, 256, args.threads)
    forwards["student"] = lambda: student.forward(batch)
    maps, scores = _maps(student, test, f"{category} student")
    rows.append({"category": category, "model": "student", "fit_seconds":
                 manifest.training.get("seconds", float("nan")), "head_bytes": 0}
                | _scores(maps, scores, masks, labels, thresholds.pixel))
    head, head_thresholds = head_maps
    mixed = 0.5 * (head / head_thresholds.pixel + maps / thresholds.pixel)
    rows.append({"category": category, "model": "ensemble"}
                | _scores(mixed, mixed.reshape(len(mixed), -1).max(axis=1), masks, labels,
                          1.0))
    latency = _median_ms(forwards, args.repeats)
    for row in rows:
        row["latency_ms"] = latency.get(row["model"], float("nan"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--max-images", type=int, default=200, help="captures per product")
    parser.add_argument("--max-test-images", type=int, default=None, help="per defect kind")
    parser.add_argument("--students", type=Path, default=None,
                        help="folder with <category>/ model directories from 'fit'")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "onboarding")
    parser.add_argument("--daemon", action="store_true",
                        help="only the first-verdict clock, through a real daemon")
    parser.add_argument("--quick", action="store_true",
                        help="bottle, 40 captures, 1 epoch, 3 test images per kind")
    args = parser.parse_args()
    if args.quick:
        args.categories, args.max_images, args.epochs = "bottle", 40, 1
        args.max_test_images, args.repeats = args.max_test_images or 3, 5
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        graph = features_graph(Path(tmp) / H.FEATURES)
        rows = []
        for category in tqdm(args.categories.split(","), desc="categories"):
            rows += (daemon_first_verdict(category, args) if args.daemon
                     else run_category(category, graph, args))
    columns = ["category", "model", "fit_seconds", "first_verdict_seconds",
               "all_captures_verdict_seconds", "head_bytes",
               "api_rss_mb", "latency_ms", "pixel_auroc", "image_auroc", "pixel_f1", "aupro",
               "operational_pixel_f1"]
    print_table(columns, [[r.get(c, "-") for c in columns] for r in rows])

    def mean(model: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["model"] == model]))

    if args.daemon:
        emit_json({"head": "daemon", "fit_seconds": mean("daemon", "fit_seconds"),
                   "first_verdict_seconds": mean("daemon", "first_verdict_seconds"),
                   "all_captures_verdict_seconds": mean("daemon",
                                                        "all_captures_verdict_seconds"),
                   "head_bytes": mean("daemon", "head_bytes"), "head_pixel_auroc": None,
                   "student_pixel_auroc": None, "head_image_auroc": None,
                   "student_image_auroc": None, "api_rss_mb": mean("daemon", "api_rss_mb")})
        return

    ratio = [h["latency_ms"] / s["latency_ms"] for h, s in zip(
        [r for r in rows if r["model"] == "padim/full"],
        [r for r in rows if r["model"] == "student"], strict=True)]
    emit_json({"head": "padim/full", "fit_seconds": mean("padim/full", "fit_seconds"),
               "first_verdict_seconds": mean("padim/full", "first_verdict_seconds"),
               "head_bytes": mean("padim/full", "head_bytes"),
               "head_pixel_auroc": mean("padim/full", "pixel_auroc"),
               "student_pixel_auroc": mean("student", "pixel_auroc"),
               "head_image_auroc": mean("padim/full", "image_auroc"),
               "student_image_auroc": mean("student", "image_auroc"),
               "ensemble_pixel_auroc": mean("ensemble", "pixel_auroc"),
               "latency_ratio": float(np.mean(ratio))})


if __name__ == "__main__":
    main()
