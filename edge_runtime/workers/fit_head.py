"""Fit one product's memory-bank head, in a child process of the API.

In the API process a fit of 200 captures left ~20 MB behind for good (its embeddings,
float64 sums and LAPACK buffers fragment the heap; trimming gave back ~1 MB), which is a
sixth of what the API may use on a 1 GB board. Here they leave with the process. numpy +
ORT only, like the API. The request comes as one JSON object on stdin (the capture lists
can be long); the head is written atomically to ``out``; a failure's reason is the last
line of stderr.
"""

from __future__ import annotations

import json
import sys


def fit(request: dict) -> None:
    from edge_runtime.inference import heads as H

    runner = H.FeatureRunner(request["graph"], request["image_size"], request["threads"],
                             arena=False)
    config = H.HeadConfig(**request["config"])
    train, held = request["train"], request["held"]
    head, out_of_fold = H.fit_cross_fitted(
        lambda rows: runner.embed_batches([train[i] for i in rows]), len(train), runner.dim,
        config, runner.image_size, runner.grid)
    H.calibrate_head(head, runner.embed_sources(held or train), out_of_fold)
    head.meta["captures"] = request["captures"]
    head.save(request["out"])


def main() -> int:
    from edge_runtime.memory import map_large_blocks
    from edge_runtime.workers.lifetime import set_parent_death_signal

    set_parent_death_signal()
    # a fit frees and allocates 20 MB per-position matrices fold after fold: mmapped, each
    # leaves when freed, where the heap kept them (200 captures at 62 dimensions: peak 174
    # MB instead of 240-259, for ~4 s more of page faults in a 10 s fit)
    map_large_blocks()
    fit(json.load(sys.stdin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
