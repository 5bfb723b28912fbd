"""fastdet.data.dicom on pydicom's bundled files and on DICOMs written here with pydicom.

Pixel data is drawn fresh per test from the `rng` fixture (tests/conftest.py reports the seed).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

from fastdet.data.dicom import load_dicom, load_dicom_series

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_dicom(
    path,
    pixels,
    *,
    photometric="MONOCHROME2",
    slope=None,
    intercept=None,
    bits_stored=None,
    series_uid=None,
    position=None,
    orientation=AXIAL,
    spacing=(0.7, 0.8),
    thickness=None,
    instance=None,
    window=None,
    sop_class=CTImageStorage,
    modality="CT",
    extra=None,
):
    """Write `pixels` ([H, W] or [F, H, W] uint16/int16) as an uncompressed DICOM file.

    position=None leaves ImagePositionPatient out; slope/intercept None leave the rescale out;
    window=(center, width) writes WindowCenter/WindowWidth; `extra` is a dict of keyword ->
    value set last (or deleted when the value is None). Returns the path.
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype not in (np.uint16, np.int16):
        raise ValueError(f"pixels: expected uint16 or int16, got {pixels.dtype}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or "1.2.826.0.1.3680043.8.498.2"
    ds.PatientID = "P001"
    ds.Modality = modality
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored or 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if thickness is not None:
        ds.SliceThickness = thickness
    if instance is not None:
        ds.InstanceNumber = int(instance)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    for keyword, value in (extra or {}).items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def bundled(name):
    """A file bundled with pydicom (never downloaded), or skip."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def decodable(path):
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def linear_window(x, center, width):
    """PS3.3 C.11.2.1.2 LINEAR windowing to [0, 1], written out independently for the tests."""
    x = np.asarray(x, np.float64)
    c, w = center - 0.5, width - 1.0
    y = (x - c) / w + 0.5
    y[x <= c - w / 2] = 0.0
    y[x > c + w / 2] = 1.0
    return y


# ---------------------------------------------------------------------------------------------
# pydicom's bundled files


def test_ct_small_in_hu_equals_pydicom():
    path = bundled("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ref = apply_modality_lut(ds.pixel_array, ds)
    hu, meta = load_dicom(path, return_meta=True)
    assert hu.dtype == np.float32 and hu.shape == (128, 128)
    np.testing.assert_array_equal(hu, ref)
    assert meta["rescale_intercept"] == -1024.0 and meta["rescale_slope"] == 1.0
    assert meta["modality"] == "CT" and meta["window"] is None and not meta["inverted"]
    assert meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468))


def test_mr_small_meta():
    path = bundled("MR_small.dcm")
    ds = pydicom.dcmread(path)
    image, meta = load_dicom(path, return_meta=True)
    np.testing.assert_array_equal(image, ds.pixel_array.astype(np.float32))
    assert meta["pixel_spacing"] == (0.3125, 0.3125)
    assert meta["slice_thickness"] == pytest.approx(0.8)
    assert meta["rows"] == meta["columns"] == 64 and meta["frames"] == 1
    assert meta["modality"] == "MR" and meta["photometric"] == "MONOCHROME2"
    assert meta["image_position"] == pytest.approx((-83.9063, -91.2, 6.6406))
    assert len(meta["image_orientation"]) == 6
    assert meta["series_uid"] == ds.SeriesInstanceUID and meta["path"] == path
    assert meta["instance_number"] == int(ds.InstanceNumber)


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")
@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_padded.dcm",
    ],
)
def test_mr_small_variants_equal_uncompressed(name):
    path = bundled(name)
    if not decodable(path):
        pytest.skip(f"no installed plugin decodes {name}")
    np.testing.assert_array_equal(load_dicom(path), load_dicom(bundled("MR_small.dcm")))


def test_mr_small_voi_uses_header_window():
    path = bundled("MR_small.dcm")
    image, meta = load_dicom(path, window="voi", return_meta=True)
    assert meta["window"] == (600.0, 1600.0)
    np.testing.assert_allclose(image, linear_window(load_dicom(path), 600, 1600), atol=1e-6)
    np.testing.assert_array_equal(image, load_dicom(path, window=(600, 1600)))


def test_bundled_multiframe_stack():
    path = bundled("rtdose.dcm")  # 15 frames, no rescale
    stack, meta = load_dicom(path, return_meta=True)
    assert stack.shape == (15, 10, 10) and meta["frames"] == 15
    np.testing.assert_array_equal(stack, pydicom.dcmread(path).pixel_array.astype(np.float32))


def test_bundled_colour_gives_rgb_and_refuses_a_window():
    path = bundled("SC_rgb_rle.dcm")
    rgb = load_dicom(path)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.float32
    with pytest.raises(ValueError, match="window"):
        load_dicom(path, window=(128, 256))


# ---------------------------------------------------------------------------------------------
# files written here


def test_written_ct_hu_and_meta(tmp_path, rng):
    stored = rng.integers(-2000, 3000, (24, 20)).astype(np.int16)
    slope, intercept = float(rng.choice([0.5, 1.0, 2.0])), float(rng.integers(-1024, 0))
    path = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        slope=slope,
        intercept=intercept,
        position=(1.5, -2.0, 30.0),
        instance=7,
        thickness=2.5,
    )
    hu, meta = load_dicom(path, return_meta=True)
    assert hu.shape == (24, 20) and hu.dtype == np.float32
    np.testing.assert_array_equal(hu, stored * slope + intercept)
    assert meta["pixel_spacing"] == (0.7, 0.8) and meta["image_position"] == (1.5, -2.0, 30.0)
    assert meta["image_orientation"] == AXIAL and meta["instance_number"] == 7
    assert meta["slice_thickness"] == 2.5 and meta["patient_id"] == "P001"
    assert (meta["rescale_slope"], meta["rescale_intercept"]) == (slope, intercept)
    np.testing.assert_array_equal(load_dicom(os.path.join(tmp_path, "ct.dcm")), hu)


def test_monochrome1_inverted(tmp_path, rng):
    stored = rng.integers(0, 4096, (16, 18)).astype(np.uint16)
    common = dict(
        bits_stored=12,
        slope=2.0,
        intercept=-100.0,
        modality="DX",
        sop_class=DigitalXRayImageStorageForPresentation,
    )
    mono2 = write_dicom(tmp_path / "m2.dcm", stored, **common)
    mono1 = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", **common)
    # modality values: reflected over the rescaled stored range [-100, 4095 * 2 - 100]
    lo, hi = -100.0, 4095 * 2.0 - 100.0
    out1, meta1 = load_dicom(mono1, return_meta=True)
    np.testing.assert_array_equal(out1, lo + hi - load_dicom(mono2))
    assert meta1["inverted"] and meta1["photometric"] == "MONOCHROME1"
    assert out1.min() >= lo and out1.max() <= hi
    # windowed: the window is in the file's units, the [0, 1] output is inverted
    window = (float(rng.uniform(1000, 5000)), float(rng.uniform(100, 3000)))
    np.testing.assert_allclose(
        load_dicom(mono1, window=window), 1.0 - load_dicom(mono2, window=window), atol=1e-6
    )
    # the brightest stored value is the darkest output
    brightest = np.unravel_index(np.argmax(stored), stored.shape)
    assert out1[brightest] == out1.min()


def test_window_values(tmp_path, rng):
    center, width = 40.0, 400.0
    hu = rng.integers(-1000, 1000, (12, 12))
    hu[0, :4] = [-1000, center, center + 100, 1000]  # below, at centre, inside, above
    path = write_dicom(
        tmp_path / "w.dcm", (hu + 1024).astype(np.int16), slope=1.0, intercept=-1024.0
    )
    out, meta = load_dicom(path, window=(center, width), return_meta=True)
    assert meta["window"] == (center, width)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert out[0, 0] == 0.0 and out[0, 3] == 1.0
    # LINEAR windowing puts the centre half a step above 0.5 (c - 0.5, w - 1 in C.11.2.1.2)
    assert out[0, 1] == pytest.approx(0.5 + 0.5 / (width - 1), abs=1e-6)
    assert out[0, 2] == pytest.approx(0.5 + 100.5 / (width - 1), abs=1e-6)
    np.testing.assert_allclose(out, linear_window(hu, center, width), atol=1e-6)
    # edges: at or below c - 0.5 - (w - 1) / 2 is 0, above c - 0.5 + (w - 1) / 2 is 1
    edge = write_dicom(tmp_path / "e.dcm", np.array([[-160, -159, 239, 240]], np.int16))
    np.testing.assert_allclose(
        load_dicom(edge, window=(center, width)), [[0, 1 / 399, 1, 1]], atol=1e-7
    )


def test_window_from_header_and_fallback(tmp_path, rng):
    stored = rng.integers(0, 4096, (10, 10)).astype(np.uint16)
    with_window = write_dicom(tmp_path / "a.dcm", stored, window=(2048, 1024))
    np.testing.assert_array_equal(
        load_dicom(with_window, window="voi"), load_dicom(with_window, window=(2048, 1024))
    )
    # no VOI in the header: the image's own range is stretched to [0, 1]
    out, meta = load_dicom(write_dicom(tmp_path / "b.dcm", stored), window="voi", return_meta=True)
    lo, hi = float(stored.min()), float(stored.max())
    assert meta["window"] == ((lo + hi) / 2, hi - lo)
    np.testing.assert_allclose(out, (stored - lo) / (hi - lo), atol=1e-6)


def test_voi_lut_sequence(tmp_path, rng):
    stored = rng.integers(0, 300, (8, 9)).astype(np.uint16)
    lut = rng.integers(0, 256, 256)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 8])  # ambiguous VRs: say which
    item.add_new("LUTData", "US", [int(v) for v in lut])
    path = write_dicom(tmp_path / "lut.dcm", stored, extra={"VOILUTSequence": [item]})
    out, meta = load_dicom(path, window="voi", return_meta=True)
    np.testing.assert_allclose(out, lut[np.clip(stored, 0, 255)] / 255.0, atol=1e-6)
    assert meta["window"] is None


@pytest.mark.parametrize(
    "window", [(40, 0), (40, -10), (40, float("nan")), "auto", (1, 2, 3), ("a", "b"), 40]
)
def test_window_validation(tmp_path, rng, window):
    path = write_dicom(tmp_path / "v.dcm", rng.integers(0, 100, (4, 4)).astype(np.uint16))
    with pytest.raises(ValueError, match="window") as info:
        load_dicom(path, window=window)
    if window in [(40, 0), (40, -10)]:
        assert "width" in str(info.value)


def test_written_multiframe_stack(tmp_path, rng):
    stored = rng.integers(-500, 2000, (5, 12, 14)).astype(np.int16)
    path = write_dicom(
        tmp_path / "mf.dcm",
        stored,
        slope=1.0,
        intercept=-1024.0,
        sop_class=MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    )
    stack, meta = load_dicom(path, return_meta=True)
    assert stack.shape == (5, 12, 14) and meta["frames"] == 5
    np.testing.assert_array_equal(stack, stored - 1024.0)
    assert load_dicom(path, window=(0, 1000)).shape == (5, 12, 14)


def test_enhanced_multiframe_functional_groups(tmp_path, rng):
    """Rescale and pixel spacing in functional groups (enhanced IODs) are honoured; a
    per-frame rescale overrides the shared one."""
    stored = rng.integers(0, 3000, (3, 6, 7)).astype(np.int16)
    shared, measures, rescale = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.25, 0.5]
    measures.SliceThickness = 1.25
    rescale.RescaleSlope, rescale.RescaleIntercept = 1.0, -1024.0
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [rescale]
    frames = [Dataset() for _ in range(3)]
    override = Dataset()
    override.RescaleSlope, override.RescaleIntercept = 2.0, 10.0
    frames[2].PixelValueTransformationSequence = [override]
    path = write_dicom(
        tmp_path / "enh.dcm",
        stored,
        spacing=None,
        orientation=None,
        extra={
            "SharedFunctionalGroupsSequence": [shared],
            "PerFrameFunctionalGroupsSequence": frames,
        },
    )
    stack, meta = load_dicom(path, return_meta=True)
    np.testing.assert_array_equal(stack[:2], stored[:2] - 1024.0)
    np.testing.assert_array_equal(stack[2], stored[2] * 2.0 + 10.0)
    assert meta["pixel_spacing"] == (0.25, 0.5) and meta["slice_thickness"] == 1.25


# ---------------------------------------------------------------------------------------------
# series


def write_series(
    folder,
    rng,
    n,
    *,
    uid,
    dz=2.5,
    orientation=AXIAL,
    shape=(10, 12),
    origin=(-50.0, 20.0, -100.0),
    positions=True,
):
    """n slices along the orientation's normal, written under shuffled file names and with
    shuffled InstanceNumbers; returns the slices' HU in position order."""
    folder.mkdir(exist_ok=True)
    normal = np.cross(orientation[:3], orientation[3:])
    names = rng.permutation(n)
    numbers = rng.permutation(n) + 1
    slices = rng.integers(-1000, 2000, (n, *shape))
    for k in range(n):
        position = np.asarray(origin) + k * dz * normal if positions else None
        write_dicom(
            folder / f"{uid[-4:]}_{names[k]:03d}.dcm",
            (slices[k] + 1024).astype(np.int16),
            slope=1.0,
            intercept=-1024.0,
            series_uid=uid,
            position=position,
            orientation=orientation,
            instance=numbers[k] if positions else k + 1,
            thickness=dz,
        )
    return slices.astype(np.float32)


def test_series_shuffled_sorted_by_position(tmp_path, rng):
    a, b = rng.uniform(-0.5, 0.5, 2)  # orthonormal row and column directions
    oblique = (np.cos(a), np.sin(a), 0.0, -np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b))
    dz = float(rng.uniform(0.5, 5.0))
    expected = write_series(tmp_path / "s", rng, 7, uid="1.2.3.4.1001", dz=dz, orientation=oblique)
    volume, meta = load_dicom_series(tmp_path / "s")
    assert volume.shape == (7, 10, 12) and volume.dtype == np.float32
    np.testing.assert_array_equal(volume, expected)
    assert meta["spacing"] == pytest.approx((dz, 0.7, 0.8))
    assert meta["series_uid"] == "1.2.3.4.1001" and meta["skipped"] == []
    zs = [
        np.dot(pydicom.dcmread(p).ImagePositionPatient, np.cross(oblique[:3], oblique[3:]))
        for p in meta["paths"]
    ]
    assert np.all(np.diff(zs) > 0)


def test_series_falls_back_to_instance_number(tmp_path, rng):
    expected = write_series(tmp_path / "s", rng, 5, uid="1.2.3.4.1002", dz=3.0, positions=False)
    volume, meta = load_dicom_series(str(tmp_path / "s"))
    np.testing.assert_array_equal(volume, expected)
    assert meta["spacing"] == pytest.approx((3.0, 0.7, 0.8))  # from SliceThickness


def test_series_other_series_skipped_and_reported(tmp_path, rng):
    folder = tmp_path / "s"
    main = write_series(folder, rng, 5, uid="1.2.3.4.2001")
    write_series(folder, rng, 2, uid="1.2.3.4.2002", shape=(8, 8))
    (folder / "notes.txt").write_text("not a DICOM file")
    with pytest.warns(UserWarning, match="1.2.3.4.2002"):
        volume, meta = load_dicom_series(folder)
    np.testing.assert_array_equal(volume, main)
    reasons = {os.path.basename(p): r for p, r in meta["skipped"]}
    assert len(reasons) == 3 and "not a readable DICOM" in reasons["notes.txt"]
    assert sum("1.2.3.4.2002" in r for r in reasons.values()) == 2
    # asking for the other series by UID loads it, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other, meta = load_dicom_series(folder, series_uid="1.2.3.4.2002")
    assert other.shape == (2, 8, 8) and len(meta["skipped"]) == 6
    with pytest.raises(ValueError, match="9.9.9"):
        load_dicom_series(folder, series_uid="9.9.9")


def test_series_inconsistent_shape_names_file(tmp_path, rng):
    folder = tmp_path / "s"
    write_series(folder, rng, 3, uid="1.2.3.4.3001")
    odd = write_dicom(
        folder / "odd.dcm",
        np.zeros((5, 5), np.int16),
        series_uid="1.2.3.4.3001",
        position=(0, 0, 500),
        instance=99,
    )
    with pytest.raises(ValueError, match="odd.dcm"):
        load_dicom_series(folder)
    assert os.path.exists(odd)


def test_series_without_images_names_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_dicom_series(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_dicom_series(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_text_and_truncated_files_name_the_file(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="nope.dcm"):
        load_dicom(tmp_path / "nope.dcm")
    text = tmp_path / "scan.dcm"
    text.write_text("patient,age\n1,42\n")
    with pytest.raises(ValueError, match=r"scan\.dcm: not a readable DICOM file"):
        load_dicom(text)
    write_dicom(tmp_path / "full.dcm", rng.integers(0, 999, (32, 32)).astype(np.uint16))
    data = (tmp_path / "full.dcm").read_bytes()
    for cut, name in [(len(data) - 100, "cut_pixels.dcm"), (200, "cut_header.dcm")]:
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(ValueError, match=name):
            load_dicom(tmp_path / name)
    with pytest.raises(ValueError, match="MR_truncated.dcm"):
        load_dicom(bundled("MR_truncated.dcm"))


def test_file_without_pixel_data(tmp_path):
    with pytest.raises(ValueError, match="rtplan.dcm.*no pixel data"):
        load_dicom(bundled("rtplan.dcm"))


def test_compressed_without_decoder_simulated(monkeypatch):
    path = bundled("MR_small_RLE.dcm")
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pydicom": ("numpy>=99",)})
    with pytest.raises(RuntimeError) as info:
        load_dicom(path)
    message = str(info.value)
    assert "MR_small_RLE.dcm" in message and "RLE Lossless" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message


def test_jpeg_ls_decodes_or_names_the_missing_decoder():
    # Whichever holds here is checked: with pylibjpeg-libjpeg (the test extra) the lossless file
    # equals the uncompressed one; without it, the error says what to install.
    path = bundled("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(JPEGLSLossless).is_available:
        np.testing.assert_array_equal(load_dicom(path), load_dicom(bundled("MR_small.dcm")))
        return
    with pytest.raises(RuntimeError, match="JPEG-LS.*pip install pylibjpeg pylibjpeg-libjpeg"):
        load_dicom(path)
