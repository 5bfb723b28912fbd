"""load_dicom on a corpus of damaged DICOM files built from pydicom's bundled test files.

Every case must either load (a float32 array of a plausible shape) or raise one of the errors
load_dicom documents, naming the file: DicomError (malformed content), FileNotFoundError, or
RuntimeError for a compressed syntax that no installed plugin decodes. Anything else (a library
error such as zlib.error or KeyError, a message without the file) is a failure.

The corpus is deterministic: fixed files, fixed truncation fractions, byte flips at offsets from
a fixed seed and header edits written with pydicom. `pytest -s` prints the counts.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
import zlib
from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, RLELossless

from fastdet.data import DataError, DicomError, load_dicom, load_dicom_series

# Diverse on purpose: modalities, VR encodings and endianness, colour models, compressions,
# multi-frame, 1- and 32-bit pixels.
CORPUS = (
    "CT_small.dcm",  # CT, rescale to HU
    "MR_small.dcm",  # MR, explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # big endian
    "MR_small_RLE.dcm",  # RLE
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "693_J2KI.dcm",  # JPEG 2000 CT
    "JPGExtended.dcm",  # JPEG extended, 12-bit
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "SC_rgb_small_odd.dcm",  # RGB, odd length
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline YBR, 3x3
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline YBR
    "SC_rgb_rle_2frame.dcm",  # RGB RLE, two frames
    "SC_rgb_rle_16bit.dcm",  # RGB RLE, 16-bit
    "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 native
    "ExplVR_BigEnd.dcm",  # RGB big endian
    "examples_palette.dcm",  # PALETTE COLOR
    "examples_ybr_color.dcm",  # 30-frame JPEG
    "image_dfl.dcm",  # deflated
    "rtdose.dcm",  # 15 frames, 32-bit, implicit VR
    "rtdose_rle.dcm",  # 15 frames, 32-bit RLE
    "liver_1frame.dcm",  # 1-bit segmentation
)
TRUNCATE = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
SEED = 20240613
OK_ERRORS = (DicomError, FileNotFoundError, RuntimeError)


def bundled(name):
    return get_testdata_file(name, download=False)


def _set(**values):
    """A header edit: set (or, for None, delete) top-level keywords."""

    def edit(ds):
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    return edit


def _edits(ds) -> dict:
    """name -> function editing a dataset in place, for the header mutations of `ds`."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits, spp = int(ds.BitsAllocated), int(ds.SamplesPerPixel)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = bytes(ds.PixelData)
    return {
        "rows_x2": _set(Rows=rows * 2),
        "rows_plus1": _set(Rows=rows + 1),
        "columns_half": _set(Columns=max(cols // 2, 1)),
        "rows_0": _set(Rows=0),
        "columns_max": _set(Columns=65535),
        "no_rows": _set(Rows=None),
        "bits_other": _set(BitsAllocated=8 if bits != 8 else 16),
        "bits_12": _set(BitsAllocated=12),
        "bits_1": _set(BitsAllocated=1),
        "bits_0": _set(BitsAllocated=0),
        "bits_stored_over": _set(BitsStored=bits + 4, HighBit=bits + 3),
        "no_bits": _set(BitsAllocated=None),
        "samples_other": _set(SamplesPerPixel=1 if spp == 3 else 3),
        "samples_4": _set(SamplesPerPixel=4),
        "frames_x3": _set(NumberOfFrames=frames * 3),
        "frames_0": _set(NumberOfFrames=0),
        "frames_huge": _set(NumberOfFrames=2**30),
        "pixels_short": _set(PixelData=pixels[: len(pixels) // 2 & ~1]),
        "pixels_long": _set(PixelData=pixels + bytes(len(pixels) // 2 & ~1) + b"\x01\x02"),
        "pixels_empty": _set(PixelData=b""),
        "no_pixels": _set(PixelData=None),
        "palette_without_lut": _set(PhotometricInterpretation="PALETTE COLOR"),
        "photometric_bogus": _set(PhotometricInterpretation="BOGUS"),
        "ybr_grey": _set(PhotometricInterpretation="YBR_FULL"),
        "planar_flip": _set(PlanarConfiguration=1 - int(ds.get("PlanarConfiguration", 0))),
        "rescale_zero": _set(RescaleSlope=0, RescaleIntercept=0),
        "pixel_rep_flip": _set(PixelRepresentation=1 - int(ds.get("PixelRepresentation", 0))),
    }


def _syntax_edits() -> dict:
    """name -> file-meta edit: bogus, not-a-transfer-syntax and mismatching syntaxes."""

    def syntax(uid):
        def edit(ds):
            ds.file_meta.TransferSyntaxUID = uid

        return edit

    return {
        "syntax_bogus": syntax("1.2.3.4.5.6.7"),
        "syntax_sop_class": syntax(CTImageStorage),
        "syntax_big_endian": syntax(ExplicitVRBigEndian),
        "syntax_rle": syntax(RLELossless),
        "syntax_missing": lambda ds: delattr(ds.file_meta, "TransferSyntaxUID"),
    }


def _write(ds, edit) -> bytes | None:
    """The file bytes of `ds` after `edit`, written with the dataset's own encoding; None when
    pydicom refuses to write the edited dataset."""
    ds = copy.deepcopy(ds)
    edit(ds)
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(
                out,
                implicit_vr=ds.original_encoding[0],
                little_endian=ds.original_encoding[1],
            )
    except Exception:  # noqa: BLE001 - a corpus case pydicom cannot write is left out
        return None
    return out.getvalue()


def build_corpus(folder, names=CORPUS) -> list[str]:
    """Write the damaged files of `names` under `folder`; returns their paths, in a fixed
    order."""
    rng = np.random.default_rng(SEED)
    paths = []

    def put(stem, case, data):
        path = os.path.join(folder, f"{stem}__{case}.dcm")
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)

    for name in names:
        source = bundled(name)
        if source is None:  # not bundled with this pydicom
            continue
        stem = name[: -len(".dcm")]
        with open(source, "rb") as f:
            data = f.read()
        for fraction in TRUNCATE:
            put(stem, f"cut{fraction:g}", data[: int(len(data) * fraction)])
        # byte flips: in the header (where the structure is), and anywhere
        for i, (n, span) in enumerate([(1, 1024), (4, 1024), (16, 1024), (1, 0), (8, 0)]):
            mutated = bytearray(data)
            hi = min(span or len(data), len(data))
            for offset in rng.integers(128, hi, n):  # past the preamble
                mutated[offset] ^= int(rng.integers(1, 256))
            put(stem, f"flip{i}", bytes(mutated))
        ds = pydicom.dcmread(source)
        for case, edit in {**_edits(ds), **_syntax_edits()}.items():
            edited = _write(ds, edit)
            if edited is not None:
                put(stem, case, edited)
    return paths


def check_load(path) -> str:
    """The outcome of load_dicom(path): "loaded", "error" (a clean one: DicomError starting
    with the path, FileNotFoundError or RuntimeError naming it) or "other: <what it was>"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load_dicom(path)
    except OK_ERRORS as e:
        if isinstance(e, RuntimeError) and "install" not in str(e):
            return f"other: RuntimeError not about a missing decoder: {e}"
        if isinstance(e, DicomError) and not str(e).startswith(f"{path}: "):
            return f"other: DicomError not starting with the path: {e}"
        if os.path.basename(path) not in str(e):
            return f"other: {type(e).__name__} without the file name: {e}"
        return "error"
    except Exception as e:  # noqa: BLE001 - anything else is what this test looks for
        return f"other: {type(e).__name__}: {e}"
    if not isinstance(image, np.ndarray) or image.dtype != np.float32:
        return f"other: returned {type(image).__name__} {getattr(image, 'dtype', '')}"
    plausible = (image.ndim in (2, 3) or (image.ndim == 4 and image.shape[-1] == 3)) and all(
        s > 0 for s in image.shape
    )
    return "loaded" if plausible else f"other: implausible shape {image.shape}"


def _report(title, outcomes: dict) -> list[str]:
    counts = Counter(o.split(":", 1)[0] for o in outcomes.values())
    print(
        f"\n{title}: {len(outcomes)} files: {counts['loaded']} loaded, "
        f"{counts['error']} clean error, {counts['other']} other"
    )
    return [f"{os.path.basename(p)}: {o}" for p, o in outcomes.items() if o.startswith("other")]


def test_mutated_corpus_loads_or_raises_a_clean_error(tmp_path):
    paths = build_corpus(tmp_path)
    assert len(paths) > 500
    bad = _report("mutated DICOM corpus", {p: check_load(p) for p in paths})
    assert not bad, "\n".join(bad)


def test_bundled_files_load_or_raise_a_clean_error():
    # the files shipped in pydicom's test_files folder (get_testdata_files would also try to
    # download the large external ones)
    folder = os.path.dirname(bundled("CT_small.dcm"))
    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".dcm"))
    assert len(paths) > 50
    bad = _report("pydicom's bundled DICOM files", {p: check_load(p) for p in paths})
    assert not bad, "\n".join(bad)


def test_deflated_file_cut_in_half_names_the_file(tmp_path):
    data = open(bundled("image_dfl.dcm"), "rb").read()
    path = tmp_path / "half_dfl.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match=r"half_dfl\.dcm: ") as info:
        load_dicom(path)
    assert str(info.value).startswith(f"{path}: ") and "zlib.error" in str(info.value)
    assert isinstance(info.value.__cause__, zlib.error)  # chained to the library's error
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", ["cut0.5", "flip1", "rows_x2", "syntax_bogus", "pixels_short"])
def test_damaged_slice_in_a_series_names_the_file(tmp_path, case):
    # a series of MR_small copies at three positions; the middle one damaged
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID.rsplit('.', 1)[0]}.{i + 1}"
        ds.save_as(folder / f"{i}.dcm")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    damaged = next(
        p for p in build_corpus(corpus, ["MR_small.dcm"]) if p.endswith(f"MR_small__{case}.dcm")
    )
    os.replace(damaged, folder / "1.dcm")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume, meta = load_dicom_series(folder)
    except DicomError as e:
        assert str(e).startswith(str(folder / "1.dcm"))
        return
    # the damaged file was left out (and reported), or read as a slice of the series
    assert volume.ndim == 3 and volume.shape[1:] == (64, 64)
    reported = [os.path.basename(p) for p, _ in meta["skipped"]]
    assert len(volume) == 3 or "1.dcm" in reported
