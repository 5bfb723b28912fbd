"""Prediction over archives: any number of inputs, decoded in DataLoader workers, predicted in
batches, written as they come, resumable after any interruption and sharded over torchrun's
processes.

A run folder OUT holds run.json (the checkpoint's fingerprint and the settings: a rerun with
others is refused) and parts/rank-<r>/ per process: one CSV per table of the task (det: boxes,
gate; cls: predictions), errors.csv (path,error) and manifest.csv. After each batch the tables
are appended and flushed, then one manifest line per input is appended, ending with the byte
size of every table after that input. A rerun reads the manifest's whole lines, cuts each table
back to the last recorded size (rows written after it belong to inputs not recorded as done)
and skips the recorded inputs: a kill -9 at any moment loses nothing recorded and duplicates no
row. When every rank is done, rank 0 (or `fastdet merge OUT`) writes the final files from the
parts, rows sorted by path (then as the task orders them)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import atomic_write_text
from .inputs import IMAGE_EXTS, read_input
from .logging import progress
from .sampling import default_workers

MANIFEST = "manifest.csv"
ERRORS = "errors.csv"


def list_inputs(paths, series: bool) -> list[Path]:
    """The inputs of `paths`, sorted, each once: files as given; `@FILE` for one path per line
    of FILE; a folder contributes its image files (a folder of DICOM files is one series when
    `series`, else each DICOM file is one image). A path that does not exist is an error here,
    before any work; a file that exists but cannot be read is the run's to list."""
    out = []
    for p in paths:
        p = str(p)
        if p.startswith("@"):
            lines = Path(p[1:]).read_text().splitlines()
            out += [Path(s.strip()) for s in lines if s.strip() and not s.startswith("#")]
            continue
        p = Path(p)
        if not p.is_dir():
            out.append(p)
        elif series and any(f.suffix.lower() == ".dcm" for f in p.iterdir()):
            out.append(p)
        else:
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise ValueError(f"{p}: no PNG, JPEG, TIFF or DICOM file in this folder")
            out += found
    missing = [p for p in out if not p.exists()]
    if missing:  # named by the user: a typo, said before any work starts
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: no such file or folder{more}")
    return sorted(set(out), key=str)


def shard(inputs: list, rank: int, world: int) -> list:
    """Rank r's share: every world-th input from the r-th (inputs sorted: shares are even)."""
    return inputs[rank::world]


class _Decoded(torch.utils.data.Dataset):
    """(index, path, image or None, error or None) of each input: a file that cannot be read
    gives its error instead of stopping the run."""

    def __init__(self, items: list, images_only: bool):
        self.items, self.images_only = items, images_only

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        index, path = self.items[i]
        try:
            kind, data, meta = read_input(path)
            if self.images_only and kind != "image":
                raise ValueError(f"{path}: a volume; this command takes 2-D images")
            return index, path, (kind, data, meta), None
        except Exception as e:  # noqa: BLE001  (any unreadable file is reported, not fatal)
            return index, path, None, f"{type(e).__name__}: {e}"


def _worker_init(_):
    torch.set_num_threads(1)  # decoding; the main process owns the cores for the model


def batches(items: list, batch_size: int, workers: int, images_only: bool = True, pin=False):
    """Batches (lists) of _Decoded's tuples in input order, decoded by `workers` processes;
    pin: their tensors in page-locked memory (faster copies to a GPU)."""
    loader = torch.utils.data.DataLoader(
        _Decoded(items, images_only),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        pin_memory=pin,
    )
    yield from loader


def fingerprint(path) -> str:
    """sha256 of a checkpoint's bytes: the identity a resumed run must keep."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def claim(out: Path, settings: dict) -> None:
    """Writes OUT/run.json, or checks that the one there has the same settings (a rerun into
    the same folder with another checkpoint or other settings would mix two runs' rows)."""
    path = out / "run.json"
    text = json.dumps(settings, indent=1, sort_keys=True) + "\n"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != json.loads(text):
            diff = sorted(k for k in {*before, *settings} if before.get(k) != settings.get(k))
            raise ValueError(
                f"{out}: holds a run with other settings ({', '.join(diff)}); use another "
                "--out, or the same checkpoint and flags to resume it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


@dataclass
class Part:
    """One rank's files: `tables` (name -> CSV header) plus errors.csv and the manifest."""

    folder: Path
    tables: dict

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tables = {**self.tables, "errors": ["path", "error"]}
        sizes = self._recorded()
        for name, header in self.tables.items():
            path = self._path(name)
            if not path.is_file() or name not in sizes:
                _write_header(path, header)
            else:
                with open(path, "r+b") as f:  # rows after the last record are redone
                    f.truncate(sizes[name])

    def _path(self, name: str) -> Path:
        return _table_path(self.folder, name)

    def _recorded(self) -> dict:
        """The tables' sizes at the manifest's last whole line (a cut line is removed)."""
        path = self.folder / MANIFEST
        if not path.is_file():
            _write_header(path, ["path", "status", *self.tables])
            return {}
        raw = path.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]  # a line cut by a kill is not a record
        if len(whole) < len(raw):
            with open(path, "r+b") as f:
                f.truncate(len(whole))
        return _last_sizes(self.folder)

    def record(self, results: list) -> None:
        """results: (path, {table: rows}) per input, in order; the tables first, then the
        manifest lines (so a manifest line only ever names rows already on disk). Binary
        appends: tell() is then the byte size the manifest records."""
        handles = {n: open(self._path(n), "ab") for n in self.tables}
        lines = []
        try:
            for path, rows in results:
                for name, table_rows in rows.items():
                    handles[name].write("".join(map(_csv_line, table_rows)).encode())
                sizes = [str(h.tell()) for h in handles.values()]
                status = "error" if rows.get("errors") else "ok"
                lines.append(_csv_line([str(path), status, *sizes]))
        finally:
            for h in handles.values():
                h.flush()
                os.fsync(h.fileno())
                h.close()
        with open(self.folder / MANIFEST, "ab") as f:
            f.write("".join(lines).encode())
            f.flush()
            os.fsync(f.fileno())


def write_csv(path: Path, header, rows) -> Path:
    """A whole CSV file (header, rows), written atomically."""
    return atomic_write_text(path, _csv_line(header) + "".join(_csv_line(r) for r in rows))


def _write_header(path: Path, header) -> None:
    atomic_write_text(path, _csv_line(header))


def _csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def part_folder(out: Path, rank: int) -> Path:
    return out / "parts" / f"rank-{rank}"


def _table_path(folder: Path, name: str) -> Path:
    return folder / (ERRORS if name == "errors" else f"{name}.csv")


def read_parts(out: Path, name: str) -> list[dict]:
    """Every rank's rows of table `name` (up to its last manifest record), as dicts."""
    rows = []
    for folder in sorted((out / "parts").glob("rank-*")):
        path = _table_path(folder, name)
        if not path.is_file():
            continue
        sizes = _last_sizes(folder)
        data = path.read_bytes()[: sizes.get(name, 0)] if sizes else b""
        if data:
            rows += list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    return rows


def _manifest_rows(folder: Path) -> list[dict]:
    """A rank's manifest records: its whole lines (a line cut by a kill is not a record)."""
    path = folder / MANIFEST
    if not path.is_file():
        return []
    raw = path.read_bytes()
    return list(csv.DictReader(io.StringIO(raw[: raw.rfind(b"\n") + 1].decode("utf-8"))))


def _last_sizes(folder: Path) -> dict:
    rows = _manifest_rows(folder)
    return {k: int(v) for k, v in rows[-1].items() if k not in ("path", "status")} if rows else {}


def done_inputs(out: Path, status: str | None = None) -> list[str]:
    """The inputs the ranks recorded (those of `status`, "ok" or "error", if given), sorted."""
    done = []
    for folder in sorted((out / "parts").glob("rank-*")):
        rows = _manifest_rows(folder)
        done += [r["path"] for r in rows if status is None or r["status"] == status]
    return sorted(set(done))


@dataclass
class Job:
    """What one archive run does: predict(batch) -> {table: rows} per decoded input of the
    batch, in order (batch: (index, path, (kind, data, meta)) tuples); merge(out, settings)
    writes the final files. images_only: volumes are errors (det, cls)."""

    tables: dict
    predict: object
    merge: object
    images_only: bool = True
    pin: bool = False  # page-locked batches, for a CUDA model


def run(
    job: Job,
    out: Path,
    inputs: list,
    settings: dict,
    batch_size: int = 8,
    workers: int | None = None,
    strict: bool = False,
    show: bool = True,
) -> dict:
    """Predicts this process's share of `inputs` (all of them without torchrun) into
    OUT/parts/rank-<r>/, skipping those already recorded; rank 0 then merges every rank's
    parts into the final files. Returns {"inputs", "done", "skipped", "failed", "files"}."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    info = distributed.setup(torch.device("cpu"))  # gloo: only the final barrier needs it
    try:
        claim(out, settings)
        part = Part(part_folder(out, info.rank), job.tables)
        mine = shard(list(enumerate(inputs)), info.rank, info.world_size)
        done = set(done_inputs(out))  # every rank's: a rerun may have another world size
        todo = [(i, p) for i, p in mine if str(p) not in done]
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        w = default_workers(local) if workers is None else workers
        failed = 0
        bar = progress(None, len(todo), f"predict (rank {info.rank})", show, unit="image")
        w = min(w, len(todo))
        for batch in batches(todo, batch_size, w, job.images_only, job.pin):
            failed += _one_batch(job, part, batch, strict)
            bar.update(len(batch))
        bar.close()
        distributed.barrier()
        files = finish(out, settings, job.merge) if info.is_main else []
        return {
            "inputs": len(inputs),
            "done": len(todo),
            "skipped": len(mine) - len(todo),
            "failed": len(done_inputs(out, "error")) if info.is_main else failed,
            "files": files,
        }
    finally:
        distributed.teardown(info)


def _one_batch(job: Job, part: Part, batch: list, strict: bool) -> int:
    good = [b for b in batch if b[3] is None]
    bad = [b for b in batch if b[3] is not None]
    if bad and strict:
        raise ValueError(bad[0][3] if str(bad[0][1]) in bad[0][3] else f"{bad[0][1]}: {bad[0][3]}")
    rows = dict(zip((b[0] for b in good), job.predict(good))) if good else {}
    results = []
    for index, path, _, error in batch:
        results.append((path, {"errors": [[str(path), error]]} if error else rows[index]))
    part.record(results)
    return len(bad)


def finish(out: Path, settings: dict, merge) -> list[Path]:
    """The final files: the task's (merge(out, settings)) and errors.csv when an input failed."""
    files = list(merge(out, settings))
    errors = merge_errors(out)
    return files + ([errors] if errors else [])


def merge_errors(out: Path) -> Path | None:
    """OUT/errors.csv from the parts (sorted by path), or None when no input failed."""
    rows = sorted(read_parts(out, "errors"), key=lambda r: r["path"])
    if not rows:
        return None
    return write_csv(out / ERRORS, ["path", "error"], [[r["path"], r["error"]] for r in rows])


def run_summary(result: dict, out: Path) -> str:
    """The lines a command prints after a run."""
    lines = [
        f"{result['inputs']} inputs (this process: {result['done']} now, {result['skipped']} "
        f"done before); {result['failed']} could not be read"
        + (f", listed in {out / ERRORS}" if result["failed"] else "")
    ]
    lines += [f"wrote {p}" for p in result["files"]]
    return "\n".join(lines)
