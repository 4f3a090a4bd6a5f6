"""MACs per part (trunk, teacher tail, student tail) for inference and one training step,
PaSTe and STFPM, at 224 and 256 px, counted with torch's FlopCounterMode."""

from __future__ import annotations

import argparse

from _common import emit_json, print_table

from edge_runtime.model.macs import inference_macs, training_step_macs
from edge_runtime.model.torch_model import ModelSpec, build_parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="same run (it takes seconds)")
    parser.parse_args()
    rows, figures = [], {}
    for size in (224, 256):
        for spec in (ModelSpec.paste(size), ModelSpec.stfpm(size)):
            parts = build_parts(spec)
            inf = inference_macs(spec, *parts)
            train = training_step_macs(spec, *parts, batch_size=8)
            key = f"{spec.mode}_{size}"
            figures[key] = {"inference": inf, "training_step": train}
            rows.append([key, inf["trunk"] / 1e6, inf["teacher_tail"] / 1e6,
                         inf["student_tail"] / 1e6, inf["total"] / 1e6,
                         train["per_sample"] / 1e6, train["per_step"] / 1e6])
    print_table(["model", "trunk M", "teacher M", "student M", "inference M",
                 "train/sample M", "train/step(8) M"], rows)
    emit_json({"macs": figures})


if __name__ == "__main__":
    main()
