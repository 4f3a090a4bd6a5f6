"""The model bundle on the torch side: trunk, teacher tail and student tail of one spec.

One bundle holds one student across products (continual learning keeps a single
task-agnostic model). It computes trunk features in ORT (the graph the daemon serves),
loads a student from a model directory, and saves complete, verified model directories.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from edge_runtime.inference import model_dir as md
from edge_runtime.inference.inferencer import TrunkRunner
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.model.onnx_export import export_merged, export_trunk
from edge_runtime.model.torch_model import ModelSpec, PasteModel, build_parts
from edge_runtime.model.weights import BackboneFiles, resolve_backbone_files


class ModelBundle:
    def __init__(
        self,
        spec: ModelSpec | None = None,
        files: BackboneFiles | None = None,
        seed: int = 0,
        threads: int = 0,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.spec = spec or ModelSpec.paste()
        self.files = files or resolve_backbone_files()
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        self.trunk, self.teacher, self.student = build_parts(self.spec, self.files, seed)
        self._tmp = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edge-runtime-")
            work_dir = self._tmp.name
        self.work_dir = Path(work_dir)
        self._trunk_runner: TrunkRunner | None = None
        self._trunk_graph: Path | None = None

    @property
    def model(self) -> PasteModel:
        return PasteModel(self.spec, self.trunk, self.teacher, self.student).eval()

    def reuse_trunk_graph(self, directory: str | os.PathLike[str]) -> None:
        """Run the trunk graph of a model directory of the same spec (the trunk is frozen,
        so it is the same graph): no ONNX export, whose tracing would leave ~25 MB in the
        training worker before its peak."""
        source = Path(directory) / md.TRUNK
        if source.is_file() and ModelSpec.from_dict(md.read_manifest(directory).spec) == \
                self.spec:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._trunk_graph = self.work_dir / md.TRUNK
            shutil.copyfile(source, self._trunk_graph)  # the version may be pruned meanwhile

    def trunk_runner(self) -> TrunkRunner:
        if self._trunk_runner is None:
            path = self._trunk_graph
            if path is None:
                path = self.work_dir / md.TRUNK
                export_trunk(self.trunk, self.spec.image_size, path)
            self._trunk_runner = TrunkRunner(path, self.spec.image_size, self.threads)
        return self._trunk_runner

    def features(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes],
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Trunk output (ORT) for each image: computed once, then reused every epoch."""
        return self.trunk_runner().features_for(sources, progress=progress)

    def load_student(self, directory: str | os.PathLike[str]) -> None:
        manifest = md.read_manifest(directory)
        if ModelSpec.from_dict(manifest.spec) != self.spec:
            raise md.ModelDirError(f"{directory} was trained with a different model spec")
        state = torch.load(Path(directory) / md.STUDENT, map_location="cpu", weights_only=True)
        self.student.load_state_dict(state)
        self.student.eval()

    def save(
        self,
        target: str | os.PathLike[str],
        thresholds: dict[str, Thresholds] | None = None,
        training: dict | None = None,
    ) -> Path:
        """Student weights + merged graph + trunk graph + manifest, complete or not at all."""
        model = self.model

        def write(tmp: Path) -> None:
            torch.save(self.student.state_dict(), tmp / md.STUDENT)
            export_merged(model, tmp / md.MERGED)
            export_trunk(self.trunk, self.spec.image_size, tmp / md.TRUNK)

        manifest = md.Manifest(self.spec.to_dict(), {}, thresholds or {}, training or {})
        return md.write_model_dir(target, write, manifest)
