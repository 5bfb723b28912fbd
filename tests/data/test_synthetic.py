"""fastdet.data.synthetic: the real datasets' layouts and formats, learnable structure, and
determinism (same seed: identical bytes; another seed: other data)."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from fastdet.data import synthetic
from fastdet.data.synthetic import synth, synth_dsb2018, synth_mri, synth_rsna

# the sizes written by conftest.py's session fixtures (kept in step with it)
RSNA_N, RSNA_SIZE = 8, 128
DSB_N, DSB_SIZE = 4, 96
MRI_N, MRI_SHAPE = 4, (24, 48, 40)


@pytest.fixture(autouse=True)
def _same_sizes(sizes):
    assert (
        sizes.RSNA_N,
        sizes.RSNA_SIZE,
        sizes.DSB_N,
        sizes.DSB_SIZE,
        sizes.MRI_N,
        sizes.MRI_SHAPE,
    ) == (RSNA_N, RSNA_SIZE, DSB_N, DSB_SIZE, MRI_N, MRI_SHAPE)


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under `folder`."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def mri_volume(subject: Path):
    """(modality volume [Z, H, W] sorted by position, the datasets, file names in that order)."""
    files = [(pydicom.dcmread(p), p.name) for p in subject.glob("*.dcm")]
    files.sort(key=lambda f: float(f[0].ImagePositionPatient[2]))
    vol = np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d, _ in files]
    )
    return vol, [d for d, _ in files], [n for _, n in files]


def nifti_label(subject: Path) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    return np.asarray(nib.load(subject / "label.nii.gz").dataobj).transpose(2, 1, 0)


# ----------------------------------------------------------------------------- RSNA


def test_rsna_csvs_have_kaggles_columns_and_rows(rsna_dir):
    header, rows = read_csv(rsna_dir / "stage_2_train_labels.csv")
    assert header == ["patientId", "x", "y", "width", "height", "Target"]
    cheader, crows = read_csv(rsna_dir / "stage_2_detailed_class_info.csv")
    assert cheader == ["patientId", "class"]
    assert [r[0] for r in crows] == [r[0] for r in rows]  # one class row per label row
    ids = list(dict.fromkeys(r[0] for r in rows))
    assert len(ids) == RSNA_N and all(UUID.match(i) for i in ids)
    for (_pid, *box, target), (_, cls) in zip(rows, crows):
        if target == "0":
            assert box == ["", "", "", ""] and cls in ("Normal", "No Lung Opacity / Not Normal")
        else:
            assert target == "1" and cls == "Lung Opacity"
            assert all(re.fullmatch(r"\d+\.0", v) for v in box)  # Kaggle's "264.0" style
    per_patient = {i: sum(r[0] == i and r[5] == "1" for r in rows) for i in ids}
    assert sum(k > 0 for k in per_patient.values()) == RSNA_N // 2  # half positive
    assert all(k <= 3 for k in per_patient.values())


def test_rsna_dicoms_are_real_format(rsna_dir):
    _, rows = read_csv(rsna_dir / "stage_2_train_labels.csv")
    ids = set(r[0] for r in rows)
    files = sorted((rsna_dir / "stage_2_train_images").iterdir())
    assert {f.name for f in files} == {f"{i}.dcm" for i in ids}
    for f in files:
        ds = pydicom.dcmread(f)
        pid = f.name[:-4]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
        assert (ds.Modality, ds.PhotometricInterpretation, ds.BodyPartExamined) == (
            "CR",
            "MONOCHROME2",
            "CHEST",
        )
        assert ds.PatientID == pid and ds.ViewPosition in ("PA", "AP")
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (8, 8, 0)
        assert (ds.Rows, ds.Columns) == (RSNA_SIZE, RSNA_SIZE)
        assert float(ds.PixelSpacing[0]) == pytest.approx(0.143 * 1024 / RSNA_SIZE)
        px = ds.pixel_array
        assert px.dtype == np.uint8 and px.shape == (RSNA_SIZE, RSNA_SIZE) and px.std() > 10


def test_rsna_boxes_lie_inside_the_image(rsna_dir):
    _, rows = read_csv(rsna_dir / "stage_2_train_labels.csv")
    for _pid, x, y, w, h, target in rows:
        if target == "1":
            x, y, w, h = map(float, (x, y, w, h))
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= RSNA_SIZE and y + h <= RSNA_SIZE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rsna_boxes_are_the_opacities_extents(seed):
    rng = np.random.default_rng(seed)
    image, boxes, label = synthetic._chest_radiograph(rng, 128, 3)
    _, lungs = synthetic._chest_anatomy(np.random.default_rng(seed), 128)
    assert len(boxes) == label.max() >= 1
    assert not ((label > 0) & ~lungs.any(0)).any()  # opacities lie in the lungs
    clear_lung = lungs.any(0) & ~ndimage.binary_dilation(label > 0, iterations=3)
    for k, (x, y, w, h) in enumerate(boxes, start=1):
        ys, xs = np.nonzero(label == k)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # bright on dark lung: what makes the boxes learnable
        assert image[label == k].mean() > image[clear_lung].mean() + 25


# ----------------------------------------------------------------------------- DSB-2018


def test_rsna_lungs_folder_is_a_folders_layout(rsna_dir):
    """OUT/lungs: each patient's pixels (as in its DICOM) and a 0/255 lung-field mask that
    holds the opacities, read by the folders layout segmentation trains on."""
    from fastdet.data import ImageFolderDataset, RSNADataset

    rsna = RSNADataset(rsna_dir)
    lungs = ImageFolderDataset(rsna_dir / "lungs")
    assert len(lungs) == len(rsna) == RSNA_N
    pids = sorted(p.stem for p in (rsna_dir / "stage_2_train_images").glob("*.dcm"))
    assert sorted(p.stem for p in (rsna_dir / "lungs" / "images").iterdir()) == pids
    for pid in pids:
        image = np.asarray(Image.open(rsna_dir / "lungs" / "images" / f"{pid}.png"))
        mask = np.asarray(Image.open(rsna_dir / "lungs" / "masks" / f"{pid}.png"))
        dicom = pydicom.dcmread(rsna_dir / "stage_2_train_images" / f"{pid}.dcm").pixel_array
        assert image.dtype == np.uint8 and np.array_equal(image, dicom)
        assert mask.shape == image.shape and set(np.unique(mask)) == {0, 255}
        assert 0.1 < (mask > 0).mean() < 0.6  # two lungs, not the whole film
        half = mask.shape[1] // 2  # a lung on each side
        assert (mask[:, :half] > 0).any() and (mask[:, half:] > 0).any()
    for i in range(len(rsna)):  # every opacity's box centre lies in the lung fields
        s = rsna[i]
        m = np.asarray(Image.open(rsna_dir / "lungs" / "masks" / f"{s['id']}.png")) > 0
        for x1, y1, x2, y2 in np.asarray(s["boxes"]).reshape(-1, 4):
            assert m[int((y1 + y2) / 2), int((x1 + x2) / 2)]


def test_dsb_layout_and_png_formats(dsb_dir):
    ids = sorted(p.name for p in dsb_dir.iterdir())
    assert len(ids) == DSB_N and all(HEX64.match(i) for i in ids)
    touching = 0
    for sid in ids:
        assert sorted(p.name for p in (dsb_dir / sid).iterdir()) == ["images", "masks"]
        assert [p.name for p in (dsb_dir / sid / "images").iterdir()] == [f"{sid}.png"]
        with Image.open(dsb_dir / sid / "images" / f"{sid}.png") as im:
            assert im.mode == "RGBA" and im.size == (DSB_SIZE, DSB_SIZE)
            rgba = np.asarray(im)
        assert (rgba[..., 3] == 255).all()
        masks = sorted((dsb_dir / sid / "masks").iterdir())
        assert masks and all(HEX64.match(m.stem) and m.suffix == ".png" for m in masks)
        union = np.zeros((DSB_SIZE, DSB_SIZE), np.int32)
        for k, m in enumerate(masks, start=1):
            with Image.open(m) as im:
                assert im.mode == "L"
                a = np.asarray(im)
            assert set(np.unique(a)) == {0, 255}
            assert ndimage.label(a > 0)[1] == 1  # one connected nucleus per mask
            assert not (union[a > 0]).any()  # non-overlapping
            union[a > 0] = k
        # nuclei are brighter than the background
        grey = rgba[..., 0].astype(float)
        assert grey[union > 0].mean() > grey[union == 0].mean() + 40
        touching += _touching_pairs(union)
    assert touching > 0


def _touching_pairs(label) -> int:
    """How many pairs of distinct instances share a 4-connected pixel edge."""
    pairs = set()
    for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
        edge = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[edge], b[edge])}
    return len(pairs)


# ----------------------------------------------------------------------------- MRI


def test_mri_series_layout_and_tags(mri_dir):
    subjects = sorted(p.name for p in mri_dir.iterdir())
    assert subjects == [f"sub-{i:03d}" for i in range(1, MRI_N + 1)]
    shuffled = 0
    for s in subjects:
        files = sorted((mri_dir / s).iterdir())
        assert len([f for f in files if f.suffix == ".dcm"]) == MRI_SHAPE[0]
        vol, dss, names = mri_volume(mri_dir / s)
        shuffled += names != sorted(names)
        assert vol.shape == MRI_SHAPE
        assert len({d.SeriesInstanceUID for d in dss}) == 1
        assert len({d.SOPInstanceUID for d in dss}) == MRI_SHAPE[0]
        for d in dss:
            assert d.Modality == "MR" and d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
            assert d.PatientID == s and d.pixel_array.dtype == np.int16
            assert (d.BitsAllocated, d.PixelRepresentation) == (16, 1)
            assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert float(d.RescaleSlope) != 1 and "RescaleIntercept" in d
        z = [float(d.ImagePositionPatient[2]) for d in dss]
        assert np.allclose(np.diff(z), float(dss[0].SliceThickness))
        assert [float(v) for v in dss[0].PixelSpacing] == [240 / MRI_SHAPE[1], 240 / MRI_SHAPE[2]]
    assert shuffled > 0  # file names are not in slice order


def test_mri_label_is_an_ellipsoidal_brain_inside_a_larger_structure(mri_dir):
    for subject in sorted(mri_dir.iterdir()):
        vol, _, _ = mri_volume(subject)
        label = nifti_label(subject)
        assert label.shape == vol.shape and label.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1}
        brain = label > 0
        # the brain does not touch the volume's border: it sits inside the head and uterus
        assert not (
            brain[0].any()
            or brain[-1].any()
            or brain[:, 0].any()
            or brain[:, -1].any()
            or brain[:, :, 0].any()
            or brain[:, :, -1].any()
        )
        assert ndimage.label(brain)[1] == 1
        # aligned with the image: the brain is brighter than the scalp ring around it,
        # which is darker than the fluid further out
        ring = ndimage.binary_dilation(brain, iterations=1) & ~brain
        outer = ndimage.binary_dilation(brain, iterations=4) & ~ndimage.binary_dilation(
            brain, iterations=2
        )
        assert vol[brain].mean() > vol[ring].mean() + 20
        assert vol[outer].mean() > vol[ring].mean()


def test_mri_label_geometry_matches_the_dicom(mri_dir):
    nib = pytest.importorskip("nibabel")
    subject = mri_dir / "sub-001"
    img = nib.load(subject / "label.nii.gz")
    _, dss, _ = mri_volume(subject)
    # voxel (i, j, k) of the NIfTI is column i, row j of slice k: the same point in RAS mm
    i, j, k = 3, 5, 7
    d = dss[k]
    lps = np.array([float(v) for v in d.ImagePositionPatient]) + np.array(
        [i * float(d.PixelSpacing[1]), j * float(d.PixelSpacing[0]), 0]
    )
    ras = img.affine @ [i, j, k, 1]
    assert np.allclose(ras[:3], lps * [-1, -1, 1])
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1


def test_mri_label_falls_back_to_npz_without_nibabel(tmp_path, monkeypatch, mri_dir):
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    out = synth_mri(tmp_path / "a", n=1, seed=3, shape=MRI_SHAPE)
    again = synth_mri(tmp_path / "b", n=1, seed=3, shape=MRI_SHAPE)
    files = sorted(p.name for p in (out / "sub-001").iterdir() if p.suffix != ".dcm")
    assert files == ["label.npz"]
    assert tree(out) == tree(again)  # no zip timestamps from the clock
    with np.load(out / "sub-001" / "label.npz") as z:
        label, spacing = z["label"], z["spacing"]
    assert np.allclose(spacing, [160 / MRI_SHAPE[0], 240 / MRI_SHAPE[1], 240 / MRI_SHAPE[2]])
    monkeypatch.undo()
    assert np.array_equal(label, nifti_label(mri_dir / "sub-001"))  # same [Z, H, W] order


# ----------------------------------------------------------------------------- determinism

WRITERS = {
    "rsna": lambda out, seed: synth_rsna(out, n=4, seed=seed, size=64),
    "dsb2018": lambda out, seed: synth_dsb2018(out, n=2, seed=seed, size=64),
    "mri": lambda out, seed: synth_mri(out, n=1, seed=seed, shape=(8, 16, 16)),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_same_seed_same_bytes_other_seed_other_data(tmp_path, kind):
    write = WRITERS[kind]
    a, b, c = (tree(write(tmp_path / name, seed)) for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    assert a == b
    assert not any(".tmp" in name for name in a)  # temporaries renamed into place
    shared = set(a) & set(c)  # CSV names; MRI subjects are sub-001... whatever the seed
    assert all(a[k] != c[k] for k in shared)
    if kind != "mri":  # ids come from the seed
        assert len(shared) == (2 if kind == "rsna" else 0)


def test_same_seed_same_pixels_in_dicom(tmp_path):
    a = synth_rsna(tmp_path / "a", n=2, seed=1, size=64)
    b = synth_rsna(tmp_path / "b", n=2, seed=1, size=64)
    for f in (a / "stage_2_train_images").iterdir():
        other = pydicom.dcmread(b / "stage_2_train_images" / f.name)
        assert np.array_equal(pydicom.dcmread(f).pixel_array, other.pixel_array)


def test_items_do_not_depend_on_how_many_are_written(tmp_path):
    small = tree(synth_dsb2018(tmp_path / "a", n=1, seed=2, size=64))
    large = tree(synth_dsb2018(tmp_path / "b", n=3, seed=2, size=64))
    assert small.items() <= large.items()


# ----------------------------------------------------------------------------- dispatch


def test_synth_dispatches_and_passes_n(tmp_path):
    out = synth("dsb2018", tmp_path / "d", n=2, seed=0)
    assert out == tmp_path / "d" and len(list(out.iterdir())) == 2


def test_synth_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        synth("coco", tmp_path / "x")
    with pytest.raises(ValueError, match="seed must be a non-negative"):
        synth("rsna", tmp_path / "y", n=1, seed=-1)
    with pytest.raises(ValueError, match="n >= 1"):
        synth_rsna(tmp_path / "z", n=0)


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synth("rsna", tmp_path, n=1)
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_rsna_lookalikes_change_only_not_normal_images(tmp_path):
    """lookalikes=True: "No Lung Opacity / Not Normal" images get brighter lungs (findings that
    are not pneumonia, no boxes); every other file is byte for byte as without it, and the
    output is still determined by the seed."""
    plain = synth_rsna(tmp_path / "plain", n=12, seed=4, size=64)
    a = synth_rsna(tmp_path / "a", n=12, seed=4, size=64, lookalikes=True)
    b = synth_rsna(tmp_path / "b", n=12, seed=4, size=64, lookalikes=True)
    ta, tp = tree(a), tree(plain)
    assert ta == tree(b) and set(ta) == set(tp)
    _, crows = read_csv(a / "stage_2_detailed_class_info.csv")
    cls = dict(crows)
    assert "No Lung Opacity / Not Normal" in cls.values() and "Normal" in cls.values()
    for name in ta:
        pid = Path(name).stem
        if name.endswith(".csv") or "masks" in name or cls[pid] != "No Lung Opacity / Not Normal":
            assert ta[name] == tp[name], name
    for pid, c in cls.items():
        if c != "No Lung Opacity / Not Normal":
            continue
        lungs = np.asarray(Image.open(a / "lungs" / "masks" / f"{pid}.png")) > 0
        new = pydicom.dcmread(a / "stage_2_train_images" / f"{pid}.dcm").pixel_array
        old = pydicom.dcmread(plain / "stage_2_train_images" / f"{pid}.dcm").pixel_array
        assert np.array_equal(new, np.asarray(Image.open(a / "lungs" / "images" / f"{pid}.png")))
        diff = new.astype(int) - old.astype(int)
        assert diff.min() >= -8  # findings only brighten (up to the finding's own noise)
        assert diff[lungs].max() >= 20  # a visible finding in or over the lungs


def test_synth_lookalikes_flag(tmp_path, capsys):
    from fastdet.cli import main

    assert main(["data", "synth", "rsna", str(tmp_path / "r"), "--n", "4", "--lookalikes"]) == 0
    assert tree(tmp_path / "r") == tree(synth_rsna(tmp_path / "s", n=4, size=256, lookalikes=True))
    with pytest.raises(ValueError, match="lookalikes are rsna's"):
        synth("dsb2018", tmp_path / "d", n=1, lookalikes=True)
