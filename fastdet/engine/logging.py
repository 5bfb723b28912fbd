"""Run records: the per-epoch metrics CSV, its plot and the progress bar.

The CSV is rewritten whole (atomically) from the history after every epoch, so after a resume
it holds exactly the epochs of the checkpoint it resumed from, never a half-written row."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from .checkpoint import atomic_write, atomic_write_text

COLUMNS = ("epoch", "train_loss", "val_loss", "val_iou", "val_dice", "lr", "seconds")
GAN_COLUMNS = ("phase", "d_loss")


def _cell(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def write_rows_csv(path, rows: list, columns) -> Path:
    """rows (dicts) as a CSV with `columns`, rewritten whole and atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _cell(row.get(k, "")) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def write_metrics_csv(path, history: list, gan: bool = False) -> Path:
    """history: one dict per epoch with COLUMNS (and GAN_COLUMNS for U-Net+GAN runs)."""
    return write_rows_csv(path, history, COLUMNS + (GAN_COLUMNS if gan else ()))


def read_metrics_csv(path) -> list:
    """Rows of a metrics CSV, numbers as floats (epoch as int)."""

    def num(k, v):
        if k == "phase":
            return v
        try:
            return int(v) if k == "epoch" else float(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: num(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_history(path, history: list) -> Path | None:
    """Losses (train, validation) and validation Dice per epoch as a PNG; None when empty."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; keeps a user's backend if set
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    try:
        ax1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
        ax1.plot(ep, [r["val_loss"] for r in history], "o-", label="validation")
        ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
        ax1.legend()
        ax2.plot(ep, [r["val_dice"] for r in history], "o-", label="Dice")
        ax2.plot(ep, [r["val_iou"] for r in history], "o-", label="IoU")
        ax2.set(xlabel="epoch", ylabel="score", ylim=(0, 1), title="Validation")
        ax2.legend()
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


def progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, off when not asked for or when stderr is not a terminal (logs)."""
    from tqdm import tqdm

    show = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not show,
        file=sys.stderr,
        dynamic_ncols=True,
    )
