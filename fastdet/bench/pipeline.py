"""The prediction pipeline's case: `predict det` over synthetic RSNA DICOMs (read in DataLoader
workers, batched, written as boxes.csv, resumable) against the same model's forward passes on
the same images decoded and prepared beforehand, the pipeline's floor: the ratio says what
reading, batching and writing cost beyond the model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..data.synthetic import synth_rsna
from ..engine.archive import list_inputs
from ..engine.inputs import read_input
from ..engine.tasks.det.data import prepare_image
from ..engine.tasks.det.inference import predict_detections
from ..engine.tasks.det.predict import predict_files
from ..engine.tasks.det.predictor import Detector
from ..engine.tasks.det.task import CHECKPOINT_FORMAT, DetConfig, build_model
from .case import Case

FLOOR = "forward only (floor)"


def predict_case(
    images: int = 64, side: int = 1024, min_size: int = 512, batch: int = 8, workers: int = 2
) -> Case:
    """fasterrcnn_resnet18_fpn (random weights, min_size = max_size) over `images` DICOMs of
    side x side; milliseconds per image of both."""

    def make(device):
        folder = Path(tempfile.mkdtemp(prefix="fastdet-bench-predict-"))
        data = synth_rsna(folder / "rsna", n=images, seed=0, size=side)
        inputs = list_inputs([data / "stage_2_train_images"], series=False)
        torch.manual_seed(0)
        config = DetConfig(
            model="fasterrcnn_resnet18_fpn", num_classes=2, min_size=min_size, max_size=min_size
        )
        model = build_model(config, pretrained=False)
        ckpt = folder / "det.pt"
        state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict()}
        torch.save({**state, "model": model.state_dict()}, ckpt)
        detector = Detector(ckpt, device)
        preloaded = [prepare_image(read_input(p)[1], config) for p in inputs]

        def predict(_):
            out = folder / "out"
            shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
            predict_files(
                detector, inputs, out, batch_size=batch, workers=workers, max_figures=0, show=False
            )

        def forward(_):
            for i in range(0, len(preloaded), batch):
                predict_detections(detector.model, preloaded[i : i + batch], device)

        return [{}], {"fastdet": predict, FLOOR: forward}

    return Case(
        f"predict_det_{images}x{side}_min{min_size}_batch{batch}_workers{workers}",
        "prediction_model",
        {
            "images": images,
            "side": side,
            "min_size": min_size,
            "batch_size": batch,
            "workers": workers,
        },
        make,
        quick=False,
        floor=FLOOR,
        min_runs=3,
        per_call={"fastdet": images, FLOOR: images},
        notes={
            "what": "predict det over files (DataLoader workers, batches, boxes.csv) "
            "against the forward passes on preloaded tensors; ms per image"
        },
    )


CASES = [predict_case()]
