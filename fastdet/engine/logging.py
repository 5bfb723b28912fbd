"""Run records: the per-epoch metrics CSV, its plot, the progress bar and strict JSON.

The CSV is rewritten whole (atomically) from the history after every epoch, so after a resume
it holds exactly the epochs of the checkpoint it resumed from, never a half-written row."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from .checkpoint import atomic_write, atomic_write_text


def _cell(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def write_metrics_csv(path, rows: list, columns) -> Path:
    """rows (dicts, e.g. one per epoch) as a CSV with `columns`, rewritten whole and atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _cell(row.get(k, "")) for k in columns})
    return atomic_write_text(path, buf.getvalue())


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


def plot_history(path, history: list, losses, scores) -> Path | None:
    """Two panels per epoch as a PNG, losses left and scores right (each `(title, ((key, label),
    ...))`); None when the history is empty."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; keeps a user's backend if set
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    # fixed margins: tight_layout measured a third of each epoch's plot (it draws twice)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.91, wspace=0.2)
    try:
        for ax, (title, curves), ylabel in zip(axes, (losses, scores), ("loss", "score")):
            for key, label in curves:
                ax.plot(ep, [r[key] for r in history], "o-", label=label)
            ax.set(xlabel="epoch", ylabel=ylabel, title=title)
            ax.legend(fontsize=7)
        axes[1].set_ylim(0, 1)
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


def json_safe(obj):
    """NaN and inf -> None, numpy scalars -> Python values, so the output is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def progress(iterable, total: int, desc: str, enabled: bool, unit: str = "batch"):
    """A tqdm bar on stderr, off when not asked for or when stderr is not a terminal (logs)."""
    from tqdm import tqdm

    show = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        disable=not show,
        file=sys.stderr,
        dynamic_ncols=True,
    )
