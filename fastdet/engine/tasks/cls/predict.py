"""`predict cls` over archives: engine.archive's loop with a classifier; one table,
predictions (path, predicted class, P per class), merged into predictions.csv sorted by path."""

from __future__ import annotations

from pathlib import Path

from ...archive import read_parts, write_csv
from .task import predict_probabilities


def tables(classes: list) -> dict:
    return {"predictions": ["path", "predicted", *(f"P({c})" for c in classes)]}


def batch_predictor(model, config, device, batch_size: int):
    """predict(batch) for engine.archive.Job: each input's predictions row."""

    def predict(batch):
        images = [data[1] for _, _, data, _ in batch]
        probs = predict_probabilities(model, config, images, device, batch_size).tolist()
        rows = []
        for (_, path, _, _), row in zip(batch, probs):
            best = config.classes[max(range(len(row)), key=row.__getitem__)]
            rows.append({"predictions": [[str(path), best, *(f"{v:.6f}" for v in row)]]})
        return rows

    return predict


def merge(out: Path, settings: dict) -> list[Path]:
    rows = sorted(read_parts(out, "predictions"), key=lambda r: r["path"])
    header = ["path", "predicted", *(f"P({c})" for c in settings["classes"])]
    return [write_csv(out / "predictions.csv", header, [[r[k] for k in header] for r in rows])]
