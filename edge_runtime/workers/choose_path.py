"""Choose a trained product's serving path (student or head), in a child process of the API.

Both graphs run on the product's held-out normal captures and on synthetic defects made
from them at the student's input size (evaluation/serving_choice.py); the head sees them
resized to its own input, as it sees a capture, and its maps are resized back, so both are
scored on the same masks. numpy + ORT only, like the API, and whatever the
two sessions and the maps take leaves with the process. The request is one JSON object on
stdin; the result is written atomically to ``out`` as JSON; a failure's reason is the last
line of stderr.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def choose(request: dict) -> dict:
    import numpy as np

    from edge_runtime.atomic import atomic_write_bytes
    from edge_runtime.evaluation import serving_choice
    from edge_runtime.inference import heads as H
    from edge_runtime.inference.inferencer import AnomalyInferencer
    from edge_runtime.inference.preprocess import fit_rgb, load_rgb, normalise

    size, threads = request["image_size"], request["threads"]  # the student's input side
    student = AnomalyInferencer(request["student_graph"], size, threads)
    head = H.HeadInferencer(H.FeatureRunner(request["features_graph"],
                                            request["head_image_size"], threads, arena=False),
                            H.Head.load(request["head"]))

    def scorer(inferencer: AnomalyInferencer) -> serving_choice.Scorer:
        def score(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            own = inferencer.image_size
            batch = rgb if own == size else np.stack([fit_rgb(image, own) for image in rgb])
            maps, scores = inferencer.forward(normalise(batch))
            return H.resize_maps(maps[:, 0], size), scores
        return score

    normals = [load_rgb(path, size) for path in request["held"]]
    result = serving_choice.compare(normals, {serving_choice.STUDENT: scorer(student),
                                              serving_choice.HEAD: scorer(head)},
                                    request["seed"])
    result |= {"version": request["version"], "head_fitted_at": request["head_fitted_at"],
               "chosen_at": time.time()}
    atomic_write_bytes(Path(request["out"]), json.dumps(result).encode())
    return result


def main() -> int:
    from edge_runtime.workers.lifetime import set_parent_death_signal

    set_parent_death_signal()
    choose(json.load(sys.stdin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
