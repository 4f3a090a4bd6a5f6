"""Continual-learning benchmark on MVTec-layout data (the structure of Table 2 of
clad-edge-compressed-replay-paste.md).

Tasks are the categories in order. Each run (MODEL/STRATEGY) executes in its own child
process, so its peak RSS is its own, and writes ``<out>/runs/<model>_<strategy>.json``
after every task together with a checkpoint (student weights + replay store): an
interrupted run resumes from its last finished task, and runs started by separate
invocations merge into one table (``results.json``, ``results.md``, ``pixel_f1.png``).

Replay runs come at equal samples (``--replay-samples``, the papers' rows, named
``paste/replay_<codec>``) and at equal bytes (``--replay-bytes`` in MB, each budget a run
``paste/replay_<codec>@<MB>MB``: the store keeps as many samples per product as the codec
fits). ``--selections`` adds runs with another sample selection (``+kcenter``). With more
than one budget, ``budget_sweep.png`` plots forgetting and pixel F1 against bytes per codec.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, SHARED, current_peak_rss_mb, emit_json, peak_rss_mb, reset_peak_rss

from edge_runtime.memory import preload_env, trim_heap
from edge_runtime.settings import Settings

DAEMON = Settings()  # the daemon's embedded defaults: how its training worker trains

# memory-bank heads on the frozen teacher (no student, no training): task-agnostic rows
HEAD_STRATEGIES = ["patchcore", "padim"]
PASTE_STRATEGIES = ["joint", "finetune", "replay_image", "replay_fp32", "replay_fp16",
                    "replay_uint8_map", "replay_uint8_channel", "replay_pq", "replay_pca",
                    *HEAD_STRATEGIES]
STFPM_STRATEGIES = ["joint", "finetune", "replay_image"]
METRICS = ["pixel_f1", "pixel_auroc", "pixel_ap", "aupro", "image_auroc", "image_f1",
           "operational_pixel_f1", "operational_image_f1"]


MODELS = ("paste", "stfpm", "paste_new")  # paste_new: PaSTe with the new recipe (issue 16)


def recipe_of(model: str) -> str:
    """The papers' recipe for paste and stfpm (the rows that reproduce the papers)."""
    return "new" if model.endswith("_new") else "paper"


def all_runs(strategies: list[str] | None, models: list[str], budgets: list[str] | None = None,
             selections: list[str] | None = None) -> list[str]:
    """Run names; ``budgets`` holds "samples" (equal samples) and/or MB values."""
    runs = []
    for model in models:
        allowed = PASTE_STRATEGIES if model.startswith("paste") else STFPM_STRATEGIES
        for s in allowed:
            if strategies is not None and s not in strategies:
                continue
            if not s.startswith("replay_"):
                runs.append(f"{model}/{s}")
                continue
            for selection in selections or ["random"]:
                name = s if selection == "random" else f"{s}+{selection}"
                runs += [f"{model}/{name}" if b == "samples" else f"{model}/{name}@{b}MB"
                         for b in budgets or ["samples"]]
    return runs


def parse_run(run: str) -> tuple[str, str, str, int | None]:
    """(model, strategy, selection, budget bytes or None) of a run name."""
    model, rest = run.split("/")
    rest, _, megabytes = rest.partition("@")
    strategy, _, selection = rest.partition("+")
    budget = round(float(megabytes.removesuffix("MB")) * 1e6) if megabytes else None
    return model, strategy, selection or "random", budget


def run_key(run: str) -> tuple:
    """Report order: the papers' rows first, then equal-bytes rows by budget."""
    model, strategy, selection, budget = parse_run(run)
    allowed = PASTE_STRATEGIES if model.startswith("paste") else STFPM_STRATEGIES
    return (model != "paste", budget or 0, allowed.index(strategy), selection)


# ---------------------------------------------------------------- one run (child process)
def run_one(run: str, args: argparse.Namespace) -> None:
    if run.split("/")[1] in HEAD_STRATEGIES:
        run_head(run, args)
        return
    import numpy as np
    import torch
    from tqdm import tqdm

    from edge_runtime.atomic import atomic_path, atomic_write_bytes
    from edge_runtime.dataset import train_images
    from edge_runtime.evaluation.evaluate import evaluate
    from edge_runtime.inference import model_dir as md
    from edge_runtime.inference.inferencer import AnomalyInferencer
    from edge_runtime.model.macs import training_step_macs
    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import Hooks, calibration_policy, learn_product

    model, strategy, selection, budget = parse_run(run)
    out = args.out / "runs"
    stem = run.replace("/", "_")
    state_path = out / f"{stem}.json"
    ckpt = out / f"{stem}.ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state and state.get("settings") != _settings(args):
        raise SystemExit(f"{state_path} was made with other settings; use another --out")
    state = state or {"run": run, "settings": _settings(args), "tasks": [], "matrix": [],
                      "train_seconds": [], "peak_rss_mb": 0.0}
    recipe = recipe_of(model)
    spec = (ModelSpec.stfpm if model == "stfpm" else ModelSpec.paste)(recipe=recipe)
    fixed = {"epochs": args.epochs, "target_steps": 0} if recipe == "paper" or args.quick \
        else {}
    config = TrainConfig.for_recipe(recipe, seed=args.seed, **fixed)
    bundle = ModelBundle(spec, seed=args.seed, threads=args.threads, work_dir=ckpt)
    kind, codec = ("replay", strategy.removeprefix("replay_")) \
        if strategy.startswith("replay_") else (strategy, "fp32")
    trainer = ContinualTrainer(bundle, kind, codec, ckpt / "store",
                               None if budget else args.replay_samples, config,
                               budget_bytes=budget, selection=selection,
                               channels_last=args.student_format == "nhwc",
                               low_memory=DAEMON.training.low_memory)  # as the daemon
    done = len(state["tasks"])
    if done and (ckpt / md.STUDENT).exists():
        bundle.student.load_state_dict(torch.load(ckpt / md.STUDENT, weights_only=True))
    categories = args.categories
    images = {c: train_images(args.data, c, args.max_train_images) for c in categories}

    for step in range(done, len(categories)):
        category = categories[step]
        if strategy == "joint" and step < len(categories) - 1:
            state["tasks"].append(category)  # joint learns everything at the end
            state["matrix"].append(None)
            state["train_seconds"].append(0.0)
            continue
        if strategy == "joint":
            for earlier in categories[:step]:
                trainer.keep(trainer.prepare(earlier, images[earlier]))
        marks: dict[str, float] = {}

        def on_phase(name: str, marks=marks) -> None:
            trim_heap()  # as the daemon's worker does at each phase
            marks[name] = time.perf_counter()
            if name == "training":  # training's own high-water mark, apart from evaluation
                reset_peak_rss()
            elif name == "saving":
                marks["train_peak"] = current_peak_rss_mb()

        with tqdm(desc=f"{run} trunk {category}", unit="img", leave=False) as fbar, \
                tqdm(desc=f"{run} task {step + 1}/{len(categories)} {category}",
                     unit="step", leave=False) as bar:
            def progress(p, bar=bar):
                bar.total = p.epochs * p.steps
                bar.n = (p.epoch - 1) * p.steps + p.step
                bar.set_postfix(loss=f"{p.loss:.3f}")

            replayed = trainer.store.accounting()["products"] if trainer.store else {}
            state.setdefault("replayed_samples", []).append(
                [v["samples"] for v in replayed.values()])  # what this task replays
            learned = learn_product(
                trainer, category, images[category], ckpt / "model",
                earlier={c: images[c] for c in categories[:step]},
                hooks=Hooks(phase=on_phase, features=lambda d, t, b=fbar: b.update(d - b.n),
                            progress=progress),
                policy=calibration_policy(recipe))
        row = []
        # no arena: it would hold batch-8 activations through the next task's training
        inferencer = AnomalyInferencer(learned.directory / md.MERGED, spec.image_size,
                                       args.threads, arena=False)
        for seen in categories[: step + 1]:
            with tqdm(desc=f"{run} eval {seen}", unit="img", leave=False) as bar:
                scores = evaluate(inferencer, args.data, seen, args.max_test_images,
                                  learned.thresholds[seen],
                                  lambda d, t, bar=bar: bar.update(d - bar.n))
            row.append({k: scores[k] for k in METRICS})
        del inferencer
        trim_heap()
        with atomic_path(ckpt / md.STUDENT) as tmp:
            torch.save(bundle.student.state_dict(), tmp)
        state["tasks"].append(category)
        state["matrix"].append(row)
        state["train_seconds"].append(round(marks["saving"] - marks["training"], 2))
        # training peak (high-water mark reset before the task); evaluation of pixel
        # metrics over tens of millions of pixels is reported apart
        state["peak_rss_mb"] = max(state["peak_rss_mb"], round(marks["train_peak"], 1))
        state["peak_rss_eval_mb"] = max(state.get("peak_rss_eval_mb", 0.0),
                                        round(peak_rss_mb(), 1))
        if step == len(categories) - 1:  # once: FlopCounterMode keeps ~85 MB of tables
            state["resources"] = _resources(bundle, trainer, spec, learned.directory, args,
                                            training_step_macs, np)
        atomic_write_bytes(state_path, json.dumps(state, indent=1).encode())


# The supplement keeps 30000 patches (PatchCore) / one Gaussian per position (PaDiM) in
# total, whatever the number of tasks; on this backbone's 64-wide fp16 patches 10000 patches
# are 1.3 MB, PaDiM's full 32-dim Gaussians 1.9 MB: both near one product's head budget.
PATCHCORE_MEMORY = 10_000


def run_head(run: str, args: argparse.Namespace) -> None:
    """Task-agnostic memory-bank heads (CLAD supplement 1.1 / 1.2): no training at all."""
    import tempfile

    import numpy as np
    from tqdm import tqdm

    from edge_runtime.atomic import atomic_write_bytes
    from edge_runtime.dataset import train_images
    from edge_runtime.evaluation.evaluate import evaluate
    from edge_runtime.inference import heads as H
    from edge_runtime.model.macs import features_graph_macs
    from edge_runtime.model.onnx_export import export_features
    from edge_runtime.model.torch_model import ModelSpec, build_parts

    _, strategy = run.split("/")
    out = args.out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"paste_{strategy}.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous and previous.get("settings") != _settings(args):
        raise SystemExit(f"{path} was made with other settings; use another --out")
    if previous and len(previous["tasks"]) == len(args.categories):
        return  # finished; an unfinished one starts over (no training to resume)
    state = {"run": run, "settings": _settings(args), "tasks": [], "matrix": [],
             "train_seconds": [], "peak_rss_mb": 0.0}
    spec = ModelSpec.paste()
    trunk, teacher, _ = build_parts(spec, seed=args.seed)
    params = sum(p.numel() for m in (trunk, teacher) for p in m.parameters())
    graph_macs = features_graph_macs(trunk, teacher, spec.image_size)
    graph = Path(tempfile.mkdtemp()) / H.FEATURES
    export_features(trunk, teacher, spec.feature_layers, spec.image_size, graph)
    runner = H.FeatureRunner(graph, spec.image_size, args.threads)
    config = H.HeadConfig(kind=strategy, seed=args.seed) if strategy == "padim" else \
        H.HeadConfig(kind="patchcore", dim=64, seed=args.seed)
    banks = H.TaskBanks(config, PATCHCORE_MEMORY, spec.image_size, runner.grid)
    moments, held = None, {}
    for step, category in enumerate(args.categories):
        images = train_images(args.data, category, args.max_train_images)
        train, val = H.holdout_split(len(images), 0.1, args.seed)
        held[category] = [images[i] for i in val]
        reset_peak_rss()
        started = time.perf_counter()
        with tqdm(desc=f"{run} features {category}", unit="img", leave=False) as bar:
            embeddings = runner.embed_sources([images[i] for i in train],
                                              progress=lambda d, t: bar.update(d - bar.n))
        if strategy == "patchcore":
            banks.add_task(embeddings)
            model = banks
        else:
            dim = H.padim_dim(config, embeddings.shape[-1], embeddings.shape[1])
            task = H.PadimMoments.of(embeddings, H.projection(embeddings.shape[-1], dim,
                                                              config.seed), config.covariance)
            moments = task if moments is None else moments.average(task, step)
            model = moments.head(config.epsilon, spec.image_size, runner.grid)
        seconds = time.perf_counter() - started
        fit_peak = current_peak_rss_mb()  # fitting's own high-water mark, apart from evaluation
        del embeddings
        inferencer = H.HeadInferencer(runner, model)
        row = []
        for seen in args.categories[: step + 1]:
            thresholds = inferencer.calibrate(held[seen])
            with tqdm(desc=f"{run} eval {seen}", unit="img", leave=False) as bar:
                scores = evaluate(inferencer, args.data, seen, args.max_test_images,
                                  thresholds, lambda d, t, bar=bar: bar.update(d - bar.n))
            row.append({k: scores[k] for k in METRICS})
        trim_heap()
        state["tasks"].append(category)
        state["matrix"].append(row)
        state["train_seconds"].append(round(seconds, 2))
        state["peak_rss_mb"] = max(state["peak_rss_mb"], round(fit_peak, 1))
        state["peak_rss_eval_mb"] = max(state.get("peak_rss_eval_mb", 0.0),
                                        round(peak_rss_mb(), 1))
        image = np.zeros((1, 3, spec.image_size, spec.image_size), np.float32)
        times = []
        for _ in range(20):
            begun = time.perf_counter()
            inferencer.forward(image)
            times.append(time.perf_counter() - begun)
        state["resources"] = {
            "architecture_memory_mb": round(params * 4 / 2**20, 3),
            "additional_memory_bytes": model.nbytes,
            "inference_macs": graph_macs + model.scoring_macs,  # features graph + numpy
            "training_macs_per_step": None,
            "inference_ms": round(float(np.median(times[3:])) * 1000, 3)}
        atomic_write_bytes(path, json.dumps(state, indent=1).encode())


def _resources(bundle, trainer, spec, model_path, args, training_step_macs, np) -> dict:
    from edge_runtime.inference import model_dir as md
    from edge_runtime.inference.inferencer import AnomalyInferencer

    params = sum(p.numel() for m in (bundle.trunk, bundle.teacher, bundle.student)
                 for p in m.parameters())
    inferencer = AnomalyInferencer(model_path / md.MERGED, spec.image_size, args.threads)
    image = np.zeros((1, 3, spec.image_size, spec.image_size), np.float32)
    for _ in range(3):
        inferencer.forward(image)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        inferencer.forward(image)
        times.append(time.perf_counter() - start)
    store = trainer.store.accounting() if trainer.store else None
    return {
        "architecture_memory_mb": round(params * 4 / 2**20, 3),
        "additional_memory_bytes": (store["payload_bytes"] + store["metadata_bytes"])
        if store else 0,
        "replay_store": store,
        # counted by the recipe when it saved the model (learn_product)
        "inference_macs": md.read_manifest(model_path).training["macs"]["total"],
        "training_macs_per_step": training_step_macs(
            spec, bundle.trunk, bundle.teacher, bundle.student,
            trainer.config.batch_size + (trainer.config.replay_batch_size if store else 0),
        )["per_step"],
        "inference_ms": round(float(np.median(times)) * 1000, 3),
    }


def _settings(args) -> dict:
    return {"data": str(args.data), "categories": args.categories, "epochs": args.epochs,
            "max_train_images": args.max_train_images, "max_test_images": args.max_test_images,
            "replay_samples": args.replay_samples, "seed": args.seed,
            "student_format": args.student_format}


# ---------------------------------------------------------------- summary (parent)
def summarise(state: dict) -> dict | None:
    import numpy as np

    from edge_runtime.evaluation.metrics import average_forgetting

    categories = state["settings"]["categories"]
    if len(state["tasks"]) < len(categories) or state["matrix"][-1] is None:
        return None
    final = state["matrix"][-1]
    out = {k: float(np.nanmean([row[k] for row in final])) for k in METRICS}
    rows = state["matrix"]
    f1 = [[r["pixel_f1"] for r in row] if row else None for row in rows]
    complete = all(row is not None for row in f1)
    out["forgetting"] = average_forgetting(f1) if complete else None
    out["pixel_f1_per_step"] = [float(np.mean(r)) if r else None for r in f1]
    res = state.get("resources", {})
    store = res.get("replay_store") or {}
    out |= {"codec": store.get("codec"), "selection": store.get("selection"),
            "budget_bytes": store.get("budget_bytes"),
            "samples_per_product": [v["samples"] for v in store.get("products", {}).values()],
            "replayed_in_last_task": (state.get("replayed_samples") or [None])[-1],
            "additional_memory_bytes": res.get("additional_memory_bytes"),
            "train_seconds": float(sum(state["train_seconds"])),
            "peak_rss_mb": state["peak_rss_mb"],
            "peak_rss_eval_mb": state.get("peak_rss_eval_mb"),
            "architecture_memory_mb": res.get("architecture_memory_mb"),
            "inference_macs": res.get("inference_macs"),
            "training_macs_per_step": res.get("training_macs_per_step"),
            "inference_ms": res.get("inference_ms"),
            "train_seconds_per_task": state["train_seconds"]}
    return out


def write_reports(out: Path, runs: dict[str, dict]) -> None:
    from edge_runtime.atomic import atomic_write_bytes

    atomic_write_bytes(out / "results.json", json.dumps(runs, indent=1).encode())
    joint = {m: runs.get(f"{m}/joint", {}).get("pixel_f1") for m in MODELS}
    head = ("| run | pixel F1 | op. pixel F1 | pixel AUROC | pixel AP | AU-PRO | image AUROC "
            "| image F1 | forgetting | gap to JT (pixel F1) | add. memory MB | samples/product "
            "| arch. MB "
            "| inf. MMACs | train MMACs/step | train s | peak RSS MB | inf. ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, r in runs.items():
        model = name.split("/")[0]
        gap = None if joint[model] is None else r["pixel_f1"] - joint[model]
        lines.append(
            f"| {name} | {f(r['pixel_f1'])} | {f(r['operational_pixel_f1'])} "
            f"| {f(r['pixel_auroc'])} | {f(r['pixel_ap'])} | {f(r['aupro'])} "
            f"| {f(r['image_auroc'])} | {f(r['image_f1'])} | {f(r['forgetting'])} | {f(gap)} "
            f"| {f((r['additional_memory_bytes'] or 0) / 1e6, 2)} "
            f"| {'/'.join(map(str, r.get('samples_per_product') or [])) or '-'} "
            f"| {f(r['architecture_memory_mb'])} | {f((r['inference_macs'] or 0) / 1e6, 1)} "
            f"| {f((r['training_macs_per_step'] or 0) / 1e6, 0)} | {f(r['train_seconds'], 0)} "
            f"| {f(r['peak_rss_mb'], 0)} | {f(r['inference_ms'], 2)} |")
    table = "\n".join(lines) + "\n" + sweep_table(runs)
    atomic_write_bytes(out / "results.md", table.encode())
    print(table)
    _plot(out, runs)
    _plot_sweep(out, runs)


def _sweep(runs: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """Equal-bytes runs as {codec[+selection]: {budget bytes: summary}}."""
    curves: dict[str, dict[int, dict]] = {}
    for name, r in runs.items():
        model, strategy, selection, budget = parse_run(name)
        if budget is None or model != "paste":
            continue
        label = strategy.removeprefix("replay_") + ("" if selection == "random"
                                                    else f"+{selection}")
        curves.setdefault(label, {})[budget] = r
    return curves


def sweep_table(runs: dict[str, dict]) -> str:
    """Forgetting / pixel F1 / samples per earlier product replayed in the last task (the
    store keeps budget / products each, so a codec that fits none forgets), one row per
    budget, one column per codec: the equal-bytes comparison at a glance."""
    curves = _sweep(runs)
    if not curves:
        return ""
    labels = sorted(curves)
    budgets = sorted({b for c in curves.values() for b in c})
    head = "| budget MB | " + " | ".join(labels) + " |"
    lines = ["", "Equal bytes: forgetting / pixel F1 / samples per earlier product replayed "
             "in the last task", "", head,
             "|" + "---|" * (len(labels) + 1)]
    for budget in budgets:
        cells = []
        for label in labels:
            r = curves[label].get(budget)
            kept = r and (r.get("replayed_in_last_task") or r["samples_per_product"])
            cells.append("-" if r is None else
                         f"{r['forgetting']:.3f} / {r['pixel_f1']:.3f} / "
                         f"{'/'.join(map(str, kept))}")
        lines.append(f"| {budget / 1e6:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_sweep(out: Path, runs: dict[str, dict]) -> None:
    curves = {k: v for k, v in _sweep(runs).items() if len(v) > 1}
    if not curves:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in sorted(curves.items()):
        xs = sorted(points)
        style = "--" if "+" in label else "-"
        left.plot([x / 1e6 for x in xs], [points[x]["forgetting"] for x in xs], style,
                  marker="o", label=label)
        right.plot([x / 1e6 for x in xs], [points[x]["pixel_f1"] for x in xs], style,
                   marker="o", label=label)
    for ax, ylabel in ((left, "forgetting (pixel F1)"), (right, "final pixel F1 (mean)")):
        ax.set_xscale("log")
        ax.set_xlabel("replay budget, MB (payload + scales + codebooks)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "budget_sweep.png", dpi=120)
    plt.close(fig)


def _plot(out: Path, runs: dict[str, dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in runs.items():
        points = [(i + 1, v) for i, v in enumerate(r["pixel_f1_per_step"]) if v is not None]
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) > 1 else "*", label=name,
                linestyle="--" if name.startswith("stfpm") else "-")
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("pixel F1 (mean over tasks seen)")
    ax.set_xticks(range(1, max(len(r["pixel_f1_per_step"]) for r in runs.values()) + 1))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pixel_f1.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--categories", default=None, help="comma-separated, in task order")
    parser.add_argument("--strategies", default=None, help="comma-separated (default all)")
    parser.add_argument("--models", default=None,
                        help="paste,stfpm (default both; the papers' recipe) and/or paste_new "
                             "(PaSTe with the new recipe)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-train-images", type=int, default=None)
    parser.add_argument("--max-test-images", type=int, default=None, help="per defect kind")
    parser.add_argument("--replay-samples", type=int, default=100)
    parser.add_argument("--replay-bytes", default="samples",
                        help="comma-separated budgets in MB (1e6 bytes), 'samples' for the "
                             "equal-samples rows; e.g. samples,0.25,1,2.4768")
    parser.add_argument("--selections", default="random", help="random,kcenter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--student-format", choices=["nchw", "nhwc"], default="nhwc",
                        help="memory format the student trains in (nchw: as before 2026-11)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "continual")
    parser.add_argument("--quick", action="store_true",
                        help="16 train images, 1 epoch, 3 test images per kind; unless given, "
                             "the first 2 categories and PaSTe joint/finetune/uint8_channel")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from edge_runtime.dataset import list_categories

    quick_defaults = args.quick and not args.categories
    args.categories = args.categories.split(",") if args.categories else \
        list_categories(args.data)
    if quick_defaults:
        args.categories = args.categories[:2]
    if args.quick and args.models is None and args.strategies is None:
        args.models, args.strategies = "paste", "joint,finetune,replay_uint8_channel"
    args.models = args.models or "paste,stfpm"
    if args.quick:
        args.epochs, args.max_train_images = 1, args.max_train_images or 16
        args.max_test_images = args.max_test_images or 3
        if args.out == REPO / "runs" / "continual":
            args.out = REPO / "runs" / "continual-quick"
    if args.run_one:
        run_one(args.run_one, args)
        return
    strategies = args.strategies.split(",") if args.strategies else None
    runs = all_runs(strategies, args.models.split(","), args.replay_bytes.split(","),
                    args.selections.split(","))
    if not runs:
        raise SystemExit("no runs match --models/--strategies")
    child_args = [a for a in sys.argv[1:]]
    # each run in a child, on the allocator the daemon's training worker gets
    env = preload_env(DAEMON.training.allocator, os.environ | {"PYTHONPATH": str(REPO)})
    for run in runs:
        print(f"== {run}", flush=True)
        done = subprocess.run([sys.executable, __file__, *child_args, "--run-one", run],
                              env=env)
        if done.returncode:
            raise SystemExit(f"run {run} failed (exit {done.returncode}); rerun to resume")
    results = {}
    for path in sorted((args.out / "runs").glob("*.json")):
        summary = summarise(json.loads(path.read_text()))
        if summary:
            results[json.loads(path.read_text())["run"]] = summary
    ordered = {r: results[r] for r in sorted(results, key=run_key)}
    write_reports(args.out, ordered)
    emit_json({"runs": {name: {k: r.get(k) for k in (
        "pixel_f1", "pixel_auroc", "pixel_ap", "aupro", "image_auroc", "image_f1",
        "operational_pixel_f1", "forgetting", "additional_memory_bytes", "budget_bytes",
        "samples_per_product", "replayed_in_last_task", "codec", "selection", "train_seconds",
        "peak_rss_mb")}
        for name, r in ordered.items()}})


if __name__ == "__main__":
    main()
