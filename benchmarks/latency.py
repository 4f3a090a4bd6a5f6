"""Inference latency, side by side in one process, batch 1 at 256 px.

(a) the merged PaSTe graph through edge-runtime's ORT inferencer (spinning off),
(b) a bare ORT session of the same graph (ORT's default options: spinning on),
(c) STFPM teacher + student in PyTorch,
plus, for the record, (b') a bare session with edge-runtime's options and (a') the
inferencer with spinning on. Rounds interleave the cases so drift hits them alike; the
first calls after each switch are discarded, since the previous case's spinning threads
(ORT's or OpenMP's) still hold the cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _common import emit_json, peak_rss_mb, print_table, stats_ms
from tqdm import tqdm

from edge_runtime.inference.inferencer import AnomalyInferencer, open_session
from edge_runtime.model.onnx_export import export_merged
from edge_runtime.model.torch_model import ModelSpec, PasteModel, build_parts


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 20)
    per_round = 10 if args.quick else 25
    if args.threads:
        torch.set_num_threads(args.threads)

    paste_spec, stfpm_spec = ModelSpec.paste(256), ModelSpec.stfpm(256)
    paste = PasteModel(paste_spec, *build_parts(paste_spec)).eval()
    stfpm = PasteModel(stfpm_spec, *build_parts(stfpm_spec)).eval()
    graph = Path(tempfile.mkdtemp()) / "paste.onnx"
    export_merged(paste, graph)
    inferencer = AnomalyInferencer(graph, 256, args.threads)
    spinning = AnomalyInferencer(graph, 256, args.threads, spinning=True)
    bare = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    bare_same = open_session(graph, args.threads)
    image = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    tensor = torch.from_numpy(image)

    def run_paste():
        inferencer.postprocess(*inferencer.forward(image))

    def run_bare():
        bare.run(None, {"image": image})

    def run_bare_same():
        bare_same.run(None, {"image": image})

    def run_spinning():
        spinning.postprocess(*spinning.forward(image))

    def run_stfpm():
        with torch.no_grad():
            stfpm(tensor)

    cases = {"paste_ort": run_paste, "bare_ort": run_bare, "stfpm_torch": run_stfpm,
             "bare_ort_same_options": run_bare_same, "paste_ort_spinning": run_spinning}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        _time(fn, 3)
    for _ in tqdm(range(rounds), desc="rounds"):
        for name, fn in cases.items():
            _time(fn, 3)
            samples[name] += _time(fn, per_round)

    result = {name: stats_ms(values) for name, values in samples.items()}
    rows = [[name, r["median"], r["p95"], len(samples[name])] for name, r in result.items()]
    print_table(["case (batch 1, 256 px)", "median ms", "p95 ms", "n"], rows)
    speedup = result["stfpm_torch"]["median"] / result["paste_ort"]["median"]
    overhead = result["paste_ort"]["median"] / result["bare_ort"]["median"]
    print(f"\nspeed-up of PaSTe ORT over STFPM torch: {speedup:.1f}x (target >= 10x)")
    print(f"PaSTe ORT / bare ORT: {overhead:.3f} (target <= 1.2)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB; torch threads {torch.get_num_threads()}")
    emit_json({
        "paste_ort_ms": round(result["paste_ort"]["median"], 3),
        "paste_ort_p95_ms": round(result["paste_ort"]["p95"], 3),
        "bare_ort_ms": round(result["bare_ort"]["median"], 3),
        "bare_ort_p95_ms": round(result["bare_ort"]["p95"], 3),
        "stfpm_torch_ms": round(result["stfpm_torch"]["median"], 3),
        "stfpm_torch_p95_ms": round(result["stfpm_torch"]["p95"], 3),
        "speedup_vs_stfpm": round(speedup, 2),
        "overhead_vs_bare": round(overhead, 3),
        "bare_ort_same_options_ms": round(result["bare_ort_same_options"]["median"], 3),
        "paste_ort_spinning_ms": round(result["paste_ort_spinning"]["median"], 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    })


if __name__ == "__main__":
    main()
