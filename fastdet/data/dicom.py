"""DICOM loading on top of pydicom: single files (2-D or multi-frame) and series folders.

Conventions
-----------
- Arrays are float32. A single-frame file gives [H, W], a multi-frame file (NumberOfFrames > 1)
  gives [F, H, W]; colour files (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR expanded
  by its palette) give [H, W, 3] or [F, H, W, 3].
- window=None: values after the modality LUT (RescaleSlope/Intercept or Modality LUT Sequence),
  i.e. in modality units: Hounsfield units for CT, raw stored values where the file has no
  modality LUT (most MR).
- window="voi" or (center, width): the VOI transform of the DICOM display pipeline (PS3.3
  C.11.2), applied to the modality values, with the output scaled to [0, 1]. Windows are in the
  file's modality units, as in the header, whatever the photometric interpretation.
- MONOCHROME1 (minimum value displayed white) is inverted *after* the LUTs, where the DICOM
  pipeline inverts it for display, so that bright means dense as in MONOCHROME2:
  windowed output -> 1 - x; modality output -> lo + hi - x, with [lo, hi] the modality-LUT image
  of the stored value range (BitsStored, PixelRepresentation; the image's min..max for float
  pixel data). Reflecting over the stored range rather than over the image's own min/max keeps
  the result independent of image content, so two files of one series invert the same way.
- Spacing is in mm: pixel_spacing is (row spacing, column spacing) = (y, x), as DICOM's
  PixelSpacing; a series' spacing is (z, y, x).
- Errors: a file that cannot be read raises DicomError (a ValueError, via DataError) whose
  message starts with the path and says what is wrong, chained to pydicom's (or zlib's, or a
  plugin's) error; a missing file stays FileNotFoundError and a compressed syntax that no
  installed plugin decodes stays RuntimeError, so "install something" is told apart from
  "this file is damaged".
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
)

__all__ = ["DataError", "DicomError", "load_dicom", "load_dicom_series"]


class DataError(ValueError):
    """A data file (image, mask, volume, labels CSV) that exists but cannot be used: corrupt,
    truncated or inconsistent. The message starts with the file's path; the library's error,
    where there is one, is chained as __cause__."""


class DicomError(DataError):
    """A DICOM file that cannot be read: not DICOM, truncated, corrupt, inconsistent header,
    no pixel data. The message starts with the file's path."""


_INSTALL_HINT = (
    "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or pip install python-gdcm)"
)
_MONO = ("MONOCHROME1", "MONOCHROME2")


# ---------------------------------------------------------------------------------------------
# single files


def load_dicom(path, window=None, return_meta: bool = False):
    """Read one DICOM image file as a float32 array.

    Args:
        path: file path (str or os.PathLike).
        window: None (modality units, e.g. HU), "voi" (the file's VOI LUT Sequence or first
            WindowCenter/WindowWidth, falling back to the image's own min..max when the header
            has neither) or a (center, width) pair in modality units. Windowed output is in
            [0, 1]. A pair uses LINEAR windowing (PS3.3 C.11.2.1.2) for width >= 1 and
            LINEAR_EXACT (C.11.2.1.3.2, the standard's definition for real-valued widths) for
            0 < width < 1; width <= 0 raises ValueError.
        return_meta: also return the metadata dict.

    Returns:
        float32 array [H, W], [F, H, W], [H, W, 3] or [F, H, W, 3] (see the module docstring),
        or (array, meta) with meta a plain dict: patient_id, study_uid, series_uid, sop_uid,
        modality, photometric (the file's), rows, columns, frames, pixel_spacing (row, col) mm
        or None, slice_thickness, image_position (x, y, z) or None (first frame for enhanced
        multi-frame), image_orientation (6 floats) or None, instance_number, rescale_slope,
        rescale_intercept, window (center, width) used or None, path, inverted (bool).

    Raises:
        FileNotFoundError: no such file.
        DicomError (a ValueError): not DICOM, corrupt or truncated, inconsistent header, no
            pixel data; the message starts with the path and the library's error is chained.
        ValueError: bad `window`, or a window asked of a colour image.
        RuntimeError: compressed pixel data and no installed plugin decodes its syntax.
    """
    window = _check_window(window)
    path = os.fspath(path)
    ds = _read(path)
    with _malformed(path):
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        tsyntax = _check_pixel_data(ds, path)
    if window is not None and photometric not in _MONO:
        raise ValueError(
            f"window: windowing applies to MONOCHROME1/2 images, {path} is {photometric}"
        )
    if tsyntax.is_compressed:
        _require_decoder(tsyntax, path)
    with _malformed(path):
        stored, missing = _decode(ds, path, tsyntax)
    if missing is not None:
        raise RuntimeError(
            f"{path}: cannot decode {_syntax(tsyntax)} pixel data ({missing}); {_INSTALL_HINT}"
        ) from missing
    with _malformed(path):
        image, inverted, used = _to_float(ds, stored, window, photometric)
        if not return_meta:
            return image
        meta = _meta(ds, path)
    meta.update(window=used, inverted=inverted)
    return image, meta


def _check_window(window):
    """None, "voi" or a (center, width) pair of finite floats with width > 0."""
    if window is None or (isinstance(window, str) and window == "voi"):
        return window
    if isinstance(window, str):
        raise ValueError(f"window: expected None, 'voi' or (center, width), got {window!r}")
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(
            f"window: expected None, 'voi' or a (center, width) pair of numbers, got {window!r}"
        ) from None
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"window: center and width must be finite, got {window!r}")
    if width <= 0:
        raise ValueError(f"window: width must be > 0, got width={width!r}")
    return center, width


@contextmanager
def _malformed(path: str):
    """Turn any error of pydicom, its plugins, zlib or numpy into a DicomError naming the file.

    pydicom parses elements lazily and decodes through plugins, so a damaged file surfaces as
    almost any exception type (zlib.error, struct.error, KeyError, StopIteration,
    NotImplementedError for an unknown VR, ...), wherever an element is first touched."""
    try:
        yield
    except (DicomError, IsADirectoryError, PermissionError):
        raise
    except MemoryError as e:
        # an inflated Rows/Columns/NumberOfFrames asks numpy for terabytes
        raise DicomError(
            f"{path}: the pixel data's size in the header does not fit in memory "
            f"(corrupt Rows/Columns/NumberOfFrames?): {e}"
        ) from e
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise DicomError(f"{path}: not a readable DICOM file ({_kind(e)}: {e})") from e


def _kind(error: Exception) -> str:
    """The error's type, with its module when not a builtin ("zlib.error" says more than
    "error")."""
    kind = type(error)
    module = kind.__module__.split(".")[0]
    return kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"


def _read(path: str) -> Dataset:
    """dcmread with force=False, errors turned into ones that name the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"{path}: no such DICOM file", path)
    with _malformed(path):
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError as e:
            # said here: pydicom's own advice (force=True) is not an option of load_dicom
            raise DicomError(
                f"{path}: not a readable DICOM file (no DICOM file meta information or 'DICM' "
                f"prefix: not DICOM, or a bare dataset without the file header)"
            ) from e


def _check_pixel_data(ds: Dataset, path: str):
    """Checks that need only the header -> the transfer syntax."""
    keys = [k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds]
    if not keys:
        # pydicom stops quietly at the end of a truncated file, so say both
        sop = ds.get("SOPClassUID")
        if sop is None:
            sop = "no SOP class"
        else:
            sop = f"SOP class {sop}" + (f" {sop.name!r}" if sop.name != str(sop) else "")
        raise DicomError(
            f"{path}: not a readable DICOM file (no pixel data: a truncated file, or not an "
            f"image; {sop})"
        )
    if not ds[keys[0]].value:
        raise DicomError(f"{path}: not a readable DICOM file ({keys[0]} is empty)")
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is None:
        raise DicomError(f"{path}: no TransferSyntaxUID in the file meta information")
    if not tsyntax.is_transfer_syntax:
        raise DicomError(
            f"{path}: TransferSyntaxUID {str(tsyntax)!r} is not a transfer syntax pydicom knows "
            f"(a corrupt header, or a private syntax: python-gdcm may read it)"
        )
    if tsyntax.is_encapsulated and "PixelData" in ds:
        # Each frame is one fragment or more; pydicom allocates all NumberOfFrames frames before
        # decoding the first, so an inflated count would ask for terabytes.
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        data = BytesIO(ds.PixelData)
        endian = "<" if tsyntax.is_little_endian else ">"
        parse_basic_offsets(data, endianness=endian)
        fragments = parse_fragments(data, endianness=endian)[0]
        if frames > fragments:
            raise DicomError(
                f"{path}: NumberOfFrames is {frames} but the compressed pixel data holds "
                f"{fragments} fragment(s) (truncated pixel data or a corrupt header)"
            )
    return tsyntax


def _decode(ds: Dataset, path: str, tsyntax):
    """(stored values, None) from ds.pixel_array (colour converted to RGB by pydicom), or
    (None, error) when a plugin is installed but its dependencies are not: that error is the
    caller's RuntimeError, kept apart from the DicomErrors of damaged data."""
    try:
        return ds.pixel_array, None
    except NotImplementedError:  # an unknown VR met on the way, not a missing plugin
        raise
    except RuntimeError as e:
        if "missing dependencies" in str(e):
            return None, e
        # every available plugin raised: corrupt data, or a variant these plugins lack
        raise DicomError(
            f"{path}: cannot decode the {_syntax(tsyntax)} pixel data, corrupt or a variant "
            f"the installed plugins do not support (python-gdcm may decode it): {e}"
        ) from e


def _require_decoder(tsyntax, path: str) -> None:
    """Raise RuntimeError naming the file, the syntax and what to install, if nothing decodes."""
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise RuntimeError(
            f"{path}: pydicom has no decoder for {_syntax(tsyntax)} pixel data "
            f"(try python-gdcm: pip install python-gdcm)"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise RuntimeError(
            f"{path}: cannot decode {_syntax(tsyntax)} pixel data, no installed "
            f"plugin handles it ({missing}); {_INSTALL_HINT}"
        )


def _syntax(tsyntax) -> str:
    return "unknown transfer syntax" if tsyntax is None else f"'{tsyntax.name}' ({tsyntax})"


def _to_float(ds: Dataset, stored: np.ndarray, window, photometric: str):
    """Modality LUT, VOI/window, MONOCHROME1 inversion -> (float32 array, inverted, window)."""
    if photometric not in _MONO:
        if photometric == "PALETTE COLOR":
            stored = apply_color_lut(stored, ds)
        return stored.astype(np.float32), False, None

    values = _modality(ds, stored)
    used = None
    if window is None:
        out = values
        if photometric == "MONOCHROME1":
            lo, hi = _modality_range(ds, values)
            out = (lo + hi) - values
    else:
        out, used = _voi(ds, values, window)
        if photometric == "MONOCHROME1":
            out = 1.0 - out
    return np.asarray(out, dtype=np.float32), photometric == "MONOCHROME1", used


def _rescale(ds: Dataset, frame: int = 0):
    """(slope, intercept) from the top level or, for enhanced multi-frame files, from the
    frame's Pixel Value Transformation (per-frame group first, then the shared group)."""
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # pydicom needs both, so do we
        return float(ds.RescaleSlope), float(ds.RescaleIntercept)
    item = _functional(ds, "PixelValueTransformationSequence", frame)
    if item is not None and "RescaleSlope" in item:
        return float(item.RescaleSlope), float(item.get("RescaleIntercept", 0.0))
    return None


def _functional(ds: Dataset, sequence: str, frame: int = 0):
    """The first item of `sequence` in the frame's per-frame functional group, else in the
    shared functional group (enhanced multi-frame IODs keep plane and rescale data there)."""
    for group, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(group)
        if items and index < len(items) and items[index].get(sequence):
            return items[index].get(sequence)[0]
    return None


def _modality(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored values -> modality units, float64, by pydicom's apply_modality_lut."""
    if _top_level_modality_lut(ds):
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if _rescale(ds) is None:
        return stored.astype(np.float64)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    # enhanced multi-frame: the rescale may differ per frame; pydicom reads it from the top
    # level only, so hand it a small dataset per frame
    stack = stored if frames > 1 else stored[None]
    out = np.empty(stack.shape, np.float64)
    for f in range(stack.shape[0]):
        frame = Dataset()
        frame.RescaleSlope, frame.RescaleIntercept = _rescale(ds, f)
        out[f] = apply_modality_lut(stack[f], frame)
    return out if frames > 1 else out[0]


def _top_level_modality_lut(ds: Dataset) -> bool:
    """Whether pydicom's apply_modality_lut finds a modality LUT or rescale on `ds` itself."""
    return bool(ds.get("ModalityLUTSequence")) or (
        "RescaleSlope" in ds and "RescaleIntercept" in ds
    )


def _modality_range(ds: Dataset, values: np.ndarray):
    """[lo, hi]: the modality-LUT image of the stored range, used to invert MONOCHROME1."""
    if ds.get("BitsStored") is None or "PixelData" not in ds:  # float pixel data
        return float(values.min()), float(values.max())
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    else:
        ends = np.array([0, 2**bits - 1], dtype=np.int64)
    if _top_level_modality_lut(ds):
        mapped = apply_modality_lut(ends, ds)
    else:  # no rescale, or an enhanced file's (first frame's) functional-group rescale
        slope, intercept = _rescale(ds) or (1.0, 0.0)
        mapped = ends * slope + intercept
    return float(np.min(mapped)), float(np.max(mapped))


def _voi(ds: Dataset, values: np.ndarray, window):
    """VOI transform to [0, 1] -> (array, (center, width) used or None for a LUT)."""
    if window == "voi":
        lut = ds.get("VOILUTSequence")
        if lut and "LUTDescriptor" in lut[0] and "LUTData" in lut[0]:
            # apply_voi_lut would take the same path (it prefers the LUT); the LUT's output
            # range is 0 .. 2**bits - 1 by definition (PS3.3 C.11.2.1.1)
            entries, first, bits = (int(v) for v in lut[0].LUTDescriptor)
            entries = entries or 2**16
            # pydicom indexes the LUT with integers and, for 8-bit LUTs, stores the index in
            # uint8 before clipping it (inputs past 255 wrap): clip to the LUT's input range
            # first, as PS3.3 C.11.2.1.1 maps out-of-range inputs to the first/last entry
            index = np.clip(np.floor(values), first, first + entries - 1).astype(np.int64)
            return apply_voi(index, ds) / float(2**bits - 1), None
        if "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
            return _window(values, center, width, function), (center, width)
        # no VOI in the header: stretch the image's own range
        lo, hi = float(values.min()), float(values.max())
        if hi == lo:
            return np.zeros_like(values), ((lo + hi) / 2, 0.0)
        center, width = (lo + hi) / 2, hi - lo
        return _window(values, center, width, "LINEAR_EXACT"), (center, width)
    center, width = window
    function = "LINEAR" if width >= 1 else "LINEAR_EXACT"
    return _window(values, center, width, function), (center, width)


def _first(value) -> float:
    """The first of a possibly multi-valued DS element (several windows: the first is used)."""
    return float(value[0]) if isinstance(value, (list, tuple, MultiValue)) else float(value)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's apply_windowing to [0, 1]: a header with BitsStored 1, unsigned and no rescale
    makes pydicom's output range exactly [0, 1], so no rescaling of its result is needed."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"  # inversion is done by the caller
    voi.BitsStored = 1
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    return apply_windowing(values, voi)


def _floats(value, n: int):
    """A tuple of n floats from a multi-valued element, or None when absent or malformed."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _scalar(ds: Dataset, keyword: str, kind=float):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _text(ds: Dataset, keyword: str):
    value = ds.get(keyword)
    return None if value is None else str(value)


def _meta(ds: Dataset, path: str) -> dict[str, Any]:
    """The plain-dict metadata of load_dicom (see its docstring); enhanced multi-frame files
    have plane data in functional groups, used when the top level lacks it."""
    measures = _functional(ds, "PixelMeasuresSequence") or Dataset()
    plane_pos = _functional(ds, "PlanePositionSequence") or Dataset()
    plane_ori = _functional(ds, "PlaneOrientationSequence") or Dataset()
    spacing = ds.get("PixelSpacing", measures.get("PixelSpacing"))
    position = ds.get("ImagePositionPatient", plane_pos.get("ImagePositionPatient"))
    orientation = ds.get("ImageOrientationPatient", plane_ori.get("ImageOrientationPatient"))
    thickness = _scalar(ds, "SliceThickness")
    if thickness is None:
        thickness = _scalar(measures, "SliceThickness")
    slope, intercept = _rescale(ds) or (1.0, 0.0)
    return {
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "modality": _text(ds, "Modality"),
        "photometric": _text(ds, "PhotometricInterpretation"),
        "rows": _scalar(ds, "Rows", int),
        "columns": _scalar(ds, "Columns", int),
        "frames": _scalar(ds, "NumberOfFrames", int) or 1,
        "pixel_spacing": _floats(spacing, 2),
        "slice_thickness": thickness,
        "image_position": _floats(position, 3),
        "image_orientation": _floats(orientation, 6),
        "instance_number": _scalar(ds, "InstanceNumber", int),
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "window": None,
        "path": path,
        "inverted": False,
    }


# ---------------------------------------------------------------------------------------------
# series


def load_dicom_series(folder, series_uid=None):
    """Read the DICOM files of one series in `folder` (not recursive) as a volume.

    Args:
        folder: a directory.
        series_uid: the SeriesInstanceUID to load; None takes the series with the most image
            files (ties: the smallest UID) and reports the others in meta["skipped"] and with
            warnings.warn.

    Returns:
        (volume, meta): volume float32 [Z, H, W] in modality units (HU for CT), each slice as
        load_dicom(path) gives it (MONOCHROME1 inverted). Slices are sorted by increasing
        position along the slice normal (cross product of the ImageOrientationPatient row and column
        directions), ties and files without a position by InstanceNumber, then by file name.
        A folder holding one multi-frame file gives its frames in file order.
        meta: spacing (z, y, x) in mm (z: median distance between consecutive positions
        along the normal, else SpacingBetweenSlices, else SliceThickness; None where unknown),
        series_uid, paths (volume order), skipped [(path, reason)] for files of other series,
        non-DICOM files and files without pixel data, plus patient_id, study_uid, modality,
        image_orientation and origin (ImagePositionPatient of the first slice or None).

    Raises:
        FileNotFoundError / NotADirectoryError: `folder` is not a directory.
        DicomError (a ValueError): no DICOM image in the folder, Rows/Columns differing within
            the series, a multi-frame file among several files, a file of the series that
            load_dicom cannot read (files whose header cannot be read are skipped instead).
        ValueError: unknown series_uid.
        RuntimeError: as load_dicom, for compressed files no installed plugin decodes.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        if not os.path.exists(folder):
            raise FileNotFoundError(2, f"{folder}: no such folder", folder)
        raise NotADirectoryError(20, f"{folder}: not a folder", folder)
    headers, skipped = _scan(folder)
    if not headers:
        raise DicomError(f"{folder}: no DICOM image found ({len(skipped)} file(s) skipped)")
    uid, members = _choose_series(folder, headers, series_uid, skipped)
    members = _sorted_slices(members)
    _check_shapes(members)
    if len(members) == 1:
        volume, first = load_dicom(members[0][0], return_meta=True)
        volume = volume if volume.ndim == 3 else volume[None]
    else:
        first = None
        slices = []
        for path, _ in members:
            image, meta = load_dicom(path, return_meta=True)
            if image.ndim != 2:
                raise DicomError(
                    f"{path}: expected a single-frame grey image in a series, "
                    f"got shape {image.shape}"
                )
            first = first or meta
            slices.append(image)
        volume = np.stack(slices)
    meta = {
        "spacing": _series_spacing(folder, members, first),
        "series_uid": uid,
        "paths": [p for p, _ in members],
        "skipped": skipped,
        "patient_id": first["patient_id"],
        "study_uid": first["study_uid"],
        "modality": first["modality"],
        "image_orientation": first["image_orientation"],
        "origin": first["image_position"],
    }
    return volume.astype(np.float32, copy=False), meta


def _scan(folder: str):
    """Headers of the image files in `folder` -> ([(path, header)], skipped [(path, reason)]).
    Pixel data is deferred (read later by load_dicom), so scanning a big folder stays cheap."""
    headers, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, defer_size="64 KB")
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                skipped.append((path, "no pixel data"))
                continue
            # pydicom converts elements when first touched: read what the series needs now,
            # so that a damaged element is this file's problem, reported here
            header = _series_header(ds)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            skipped.append((path, f"not a readable DICOM file ({_kind(e)}: {e})"))
            continue
        headers.append((path, header))
    return headers, skipped


def _series_header(ds: Dataset) -> dict:
    """What sorting, grouping and spacing use of one file's header, as plain values."""
    measures = _functional(ds, "PixelMeasuresSequence") or Dataset()
    spacing = None  # from the header: SpacingBetweenSlices, else SliceThickness
    for source in (ds, measures):
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            spacing = spacing if spacing is not None else _scalar(source, keyword)
    return {
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "shape": (ds.get("Rows"), ds.get("Columns")),
        "position": _floats(ds.get("ImagePositionPatient"), 3),
        "normal": _normal(ds),
        "instance": _scalar(ds, "InstanceNumber", int),
        "spacing": spacing,
    }


def _choose_series(folder, headers, series_uid, skipped):
    """Pick one series; the other files go to `skipped` (and to a warning when not asked)."""
    groups: dict[str, list] = {}
    for path, header in headers:
        groups.setdefault(header["series_uid"], []).append((path, header))
    if series_uid is None:
        uid = min(groups, key=lambda u: (-len(groups[u]), u))
    elif str(series_uid) in groups:
        uid = str(series_uid)
    else:
        raise ValueError(
            f"{folder}: no image of series {series_uid!r} (series found: {sorted(groups)})"
        )
    others = {u: g for u, g in groups.items() if u != uid}
    for u, group in others.items():
        skipped.extend((path, f"other series {u!r}") for path, _ in group)
    if others and series_uid is None:
        listed = ", ".join(f"{u!r} ({len(g)} files)" for u, g in sorted(others.items()))
        warnings.warn(
            f"{folder}: several series; loaded {uid!r} ({len(groups[uid])} files), "
            f"skipped {listed}",
            stacklevel=3,
        )
    return uid, groups[uid]


def _normal(ds: Dataset):
    """The unit slice normal from ImageOrientationPatient, or None."""
    ori = _floats(ds.get("ImageOrientationPatient"), 6)
    if ori is None:
        return None
    n = np.cross(ori[:3], ori[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 and np.isfinite(norm) else None


def _sorted_slices(members):
    """Sort by position along the normal when every file has one, else by InstanceNumber;
    the file name breaks the remaining ties. Adds the position: [(path, (header, z or None))]."""
    normal = members[0][1]["normal"]
    keyed = []
    for path, header in members:
        pos = header["position"]
        z = float(np.dot(pos, normal)) if pos is not None and normal is not None else None
        keyed.append((path, header, z if z is not None and np.isfinite(z) else None))
    have_z = all(z is not None for _, _, z in keyed)

    def key(item):
        path, header, z = item
        number = header["instance"]
        number = number if number is not None else np.iinfo(np.int64).max
        return (z if have_z else 0.0, number, os.path.basename(path))

    return [(path, (header, z if have_z else None)) for path, header, z in sorted(keyed, key=key)]


def _check_shapes(members) -> None:
    path0, (header0, _) = members[0]
    for path, (header, _) in members[1:]:
        if header["shape"] != header0["shape"]:
            raise DicomError(
                f"{path}: Rows/Columns {header['shape']} differ from {header0['shape']} of "
                f"{path0} in the same series"
            )


def _series_spacing(folder, members, first):
    """(z, y, x) in mm; z from the positions along the normal, else from the header."""
    y, x = first["pixel_spacing"] or (None, None)
    zs = [z for _, (_, z) in members]
    dz = None
    if len(zs) > 1 and zs[0] is not None:
        steps = np.diff(zs)
        dz = float(np.median(steps))
        if dz == 0:
            warnings.warn(
                f"{folder}: slices share one position; z spacing taken from the header",
                stacklevel=3,
            )
            dz = None
        elif np.max(np.abs(steps - dz)) > 0.01 * abs(dz) + 1e-4:
            # a gap (missing file) or mixed acquisitions: the median still holds for most
            warnings.warn(
                f"{folder}: uneven slice spacing ({steps.min():g} to "
                f"{steps.max():g} mm); using the median {dz:g} mm",
                stacklevel=3,
            )
    if dz is None:
        dz = members[0][1][0]["spacing"]
    return (abs(dz) if dz is not None else None, y, x)
