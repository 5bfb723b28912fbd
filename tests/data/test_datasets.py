"""fastdet.data.datasets on synthetic data in the real layouts: the sample format, splits by
patient / subject, negatives kept, and bad data raising errors that name the file (or, with
skip_bad, counted in .skipped with a warning)."""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pydicom
import pytest
import tifffile
import torch
from PIL import Image

from fastdet.data import DataError, DicomError
from fastdet.data.datasets import (
    DSB2018Dataset,
    ImageFolderDataset,
    MRISliceDataset,
    RSNADataset,
    boxes_from_instances,
    split_ids,
)

RSNA_CSV = "stage_2_train_labels.csv"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def truncate(path, fraction=0.5):
    """Cut the file to `fraction` of its bytes, as an interrupted copy or download does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def check_disjoint_cover(everything, train, val):
    assert set(train) | set(val) == set(everything)
    assert not set(train) & set(val)
    assert train and val


# ----------------------------------------------------------------------------- split_ids


def test_split_ids_is_deterministic_order_free_and_stratified():
    ids = [f"p{i:02d}" for i in range(20)]
    strata = {i: int(i[1:]) < 5 for i in ids}
    val = split_ids(ids, "val", seed=4, val_fraction=0.2, strata=strata)
    train = split_ids(ids, "train", seed=4, val_fraction=0.2, strata=strata)
    check_disjoint_cover(ids, train, val)
    assert len(val) == 4 and sum(strata[i] for i in val) == 1  # 5 of 20 positives -> 1 of 4
    assert split_ids(ids[::-1], "val", seed=4, val_fraction=0.2, strata=strata) == val[::-1]
    assert any(split_ids(ids, "val", seed=s, val_fraction=0.2) != val for s in range(5))
    assert split_ids(ids, None) == ids
    assert split_ids(["a", "b"], "val", val_fraction=0.01) != []  # at least one ...
    assert split_ids(["a", "b"], "train", val_fraction=0.9) != []  # ... on each side


def test_split_ids_test_split_is_held_out_and_leaves_val_as_it_was():
    ids = [f"p{i:02d}" for i in range(30)]
    strata = {i: int(i[1:]) % 3 == 0 for i in ids}
    kw = dict(seed=2, val_fraction=0.25, strata=strata)
    parts = {s: split_ids(ids, s, test_fraction=0.2, **kw) for s in ("train", "val", "test")}
    assert sorted(sum(parts.values(), [])) == ids  # a partition ...
    assert len(set(parts["test"]) & set(parts["val"] + parts["train"])) == 0  # ... held out
    assert (len(parts["val"]), len(parts["test"])) == (8, 6)
    assert sum(strata[i] for i in parts["test"]) == 2  # stratified: 10 of 30 -> 2 of 6
    assert parts["val"] == split_ids(ids, "val", **kw)  # the same validation images as without
    assert split_ids(ids, "test", **kw) == []  # test_fraction 0: none
    assert len(split_ids(["a", "b", "c"], "test", val_fraction=0.1, test_fraction=0.01)) == 1


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"split": "holdout"}, "split must be"),
        ({"split": "val", "val_fraction": 1.0}, "val_fraction"),
        ({"split": "test", "val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
    ],
)
def test_split_ids_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        split_ids(["a", "b"], **kw)


def test_boxes_from_instances_are_pixel_edge_boxes():
    inst = np.zeros((6, 8), np.int32)
    inst[1:3, 2:5] = 1
    inst[4, 7] = 2
    assert boxes_from_instances(inst).tolist() == [[2, 1, 5, 3], [7, 4, 8, 5]]
    assert boxes_from_instances(np.zeros((3, 3), np.int32)).shape == (0, 4)


# ----------------------------------------------------------------------------- RSNA


def test_rsna_samples_match_the_files(rsna_dir, sizes):
    ds = RSNADataset(rsna_dir)
    rows = read_rows(rsna_dir / "stage_2_train_labels.csv")
    assert len(ds) == sizes.RSNA_N and ds.skipped == []
    negatives = 0
    for sample in ds:
        pid = sample["id"]
        mine = [r for r in rows if r["patientId"] == pid]
        img = sample["image"]
        assert img.dtype == torch.float32 and img.shape == (1, sizes.RSNA_SIZE, sizes.RSNA_SIZE)
        px = pydicom.dcmread(rsna_dir / "stage_2_train_images" / f"{pid}.dcm").pixel_array
        assert np.array_equal(img[0].numpy(), px)
        expect = [
            [
                float(r["x"]),
                float(r["y"]),
                float(r["x"]) + float(r["width"]),
                float(r["y"]) + float(r["height"]),
            ]
            for r in mine
            if r["Target"] == "1"
        ]
        boxes, labels = sample["boxes"], sample["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(expect), 4)
        assert boxes.tolist() == expect
        assert labels.dtype == torch.int64 and labels.tolist() == [1] * len(expect)
        meta = sample["meta"]
        assert meta["target"] == int(bool(expect))
        assert (meta["class"] == "Lung Opacity") == bool(expect)
        negatives += not expect
    assert negatives == sizes.RSNA_N // 2  # negatives are kept


def test_rsna_without_class_csv_has_no_class(rsna_dir, copy_of):
    root = copy_of(rsna_dir)
    (root / "stage_2_detailed_class_info.csv").unlink()
    assert {s["meta"]["class"] for s in RSNADataset(root)} == {None}


def test_rsna_splits_by_patient(rsna_dir):
    everything = RSNADataset(rsna_dir).ids
    train = RSNADataset(rsna_dir, split="train", split_seed=1).ids
    val = RSNADataset(rsna_dir, split="val", split_seed=1).ids
    check_disjoint_cover(everything, train, val)
    assert RSNADataset(rsna_dir, split="val", split_seed=1).ids == val
    positives = {s["id"] for s in RSNADataset(rsna_dir) if len(s["boxes"])}
    assert set(val) & positives and set(val) - positives  # stratified: both kinds in val


def test_rsna_missing_dicom_names_the_file(rsna_dir, copy_of):
    root = copy_of(rsna_dir)
    victim = sorted((root / "stage_2_train_images").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        RSNADataset(root)
    with pytest.warns(UserWarning, match=r"skipped 1 of \d+ item\(s\) \(missing image: 1\)"):
        ds = RSNADataset(root, skip_bad=True)
    assert len(ds) == 7 and [i for i, _ in ds.skipped] == [victim.stem]
    assert "missing image" in ds.skipped[0][1] and victim.name in ds.skipped[0][1]


def test_rsna_box_outside_the_image_names_patient_and_box(rsna_dir, copy_of, sizes):
    root = copy_of(rsna_dir)
    rows = read_rows(root / "stage_2_train_labels.csv")
    bad = next(r for r in rows if r["Target"] == "1")
    bad["x"] = f"{sizes.RSNA_SIZE - 4:.1f}"
    write_rows(root / "stage_2_train_labels.csv", rows)
    pattern = rf"patientId {bad['patientId']}: box \(x={sizes.RSNA_SIZE - 4}"
    with pytest.raises(ValueError, match=pattern):
        RSNADataset(root)
    with pytest.warns(UserWarning, match=r"box outside the image: 1"):
        ds = RSNADataset(root, skip_bad=True)
    assert bad["patientId"] not in ds.ids and len(ds) == sizes.RSNA_N - 1


def test_rsna_malformed_row_names_the_line(rsna_dir, copy_of):
    root = copy_of(rsna_dir)
    rows = read_rows(root / "stage_2_train_labels.csv")
    line = next(k for k, r in enumerate(rows) if r["Target"] == "1")
    rows[line]["width"] = ""
    write_rows(root / "stage_2_train_labels.csv", rows)
    with pytest.raises(ValueError, match=rf"stage_2_train_labels.csv:{line + 2}: patientId"):
        RSNADataset(root)
    with pytest.warns(UserWarning, match="bad CSV row: 1"):
        assert len(RSNADataset(root, skip_bad=True).skipped) == 1


def test_rsna_missing_csv_or_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage_2_train_labels.csv"):
        RSNADataset(tmp_path)
    (tmp_path / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Target'\]"):
        RSNADataset(tmp_path)


def test_rsna_binary_labels_csv_is_named_not_a_text_csv(tmp_path):
    labels = tmp_path / "stage_2_train_labels.csv"
    labels.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # e.g. a gzipped CSV
    with pytest.raises(DataError, match=r"stage_2_train_labels\.csv: not a text CSV"):
        RSNADataset(tmp_path)
    labels.write_bytes(b"patientId,x,y,width,height,Target\np1,,,,,0\x00\n")
    with pytest.raises(DataError, match=r"stage_2_train_labels\.csv: not a text CSV.*NUL"):
        RSNADataset(tmp_path)


def test_rsna_empty_labels_csv(tmp_path):
    for text in ("", "\n\n"):
        (tmp_path / "stage_2_train_labels.csv").write_text(text)
        with pytest.raises(DataError, match=r"stage_2_train_labels\.csv: empty RSNA labels CSV"):
            RSNADataset(tmp_path)


def test_rsna_csv_line_with_wrong_field_count_or_too_long(rsna_dir, copy_of, sizes):
    root = copy_of(rsna_dir)
    labels = root / "stage_2_train_labels.csv"
    lines = labels.read_text().splitlines()
    pids = [line.split(",")[0] for line in lines[1:]]
    lines[2] = lines[2].rsplit(",", 2)[0]  # two fields short
    lines[4] = lines[4] + ",extra"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"csv:3: patientId {pids[1]}: 4 field\(s\) where"):
        RSNADataset(root)
    with pytest.warns(UserWarning, match="bad CSV row: 2"):
        ds = RSNADataset(root, skip_bad=True)
    assert {i for i, _ in ds.skipped} == {pids[1], pids[3]}
    assert "csv:5: " in dict(ds.skipped)[pids[3]] and "7 field(s)" in dict(ds.skipped)[pids[3]]
    # a field past the csv module's limit: an error for the whole file, with its line
    lines[2] = f"{pids[1]},{'9' * 200_000},1,1,1,1"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"csv:3: not a valid CSV line \(field larger"):
        RSNADataset(root, skip_bad=True)


def test_rsna_bad_class_csv_names_the_line(rsna_dir, copy_of):
    root = copy_of(rsna_dir)
    classes = root / "stage_2_detailed_class_info.csv"
    classes.write_text(classes.read_text() + "lonely-id\n")
    with pytest.raises(DataError, match=r"class_info\.csv:\d+: expected patientId,class"):
        RSNADataset(root)


def test_rsna_damaged_dicom_names_the_file(rsna_dir, copy_of, sizes):
    root = copy_of(rsna_dir)
    positives = sorted({r["patientId"] for r in read_rows(root / RSNA_CSV) if r["Target"] == "1"})
    negative = next(r["patientId"] for r in read_rows(root / RSNA_CSV) if r["Target"] == "0")
    images = root / "stage_2_train_images"
    (images / f"{positives[0]}.dcm").write_bytes(b"\x00" * 100)  # header unreadable
    with pytest.raises(DicomError, match=rf"{positives[0]}\.dcm: "):
        RSNADataset(root)
    with pytest.warns(UserWarning, match="unreadable image: 1"):
        ds = RSNADataset(root, skip_bad=True)
    assert [i for i, _ in ds.skipped] == [positives[0]] and len(ds) == sizes.RSNA_N - 1
    # pixel data cut short: seen when the image is read
    truncate(images / f"{negative}.dcm", 0.7)
    with pytest.raises(DicomError, match=rf"{negative}\.dcm: ") as info:
        ds[ds.ids.index(negative)]
    assert info.value.__cause__ is not None


def test_transform_is_applied(rsna_dir):
    def transform(sample):
        return dict(sample, image=sample["image"] / 255, seen=True)

    sample = RSNADataset(rsna_dir, transform=transform)[0]
    assert sample["seen"] and sample["image"].max() <= 1


# ----------------------------------------------------------------------------- DSB-2018


def test_dsb_samples_match_the_masks(dsb_dir, sizes):
    ds = DSB2018Dataset(dsb_dir)
    assert len(ds) == sizes.DSB_N
    for sample in ds:
        folder = dsb_dir / sample["id"]
        rgba = np.asarray(Image.open(folder / "images" / f"{sample['id']}.png")).astype(np.float32)
        img = sample["image"]
        assert img.shape == (1, sizes.DSB_SIZE, sizes.DSB_SIZE) and img.dtype == torch.float32
        assert torch.allclose(img[0], torch.from_numpy(rgba[..., :3].mean(-1)))
        masks = [np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").iterdir())]
        inst = sample["instances"].numpy()
        assert inst.dtype == np.int32 and inst.max() == len(masks)
        for k, m in enumerate(masks, start=1):
            assert np.array_equal(inst == k, m)
            ys, xs = np.nonzero(m)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert sample["boxes"][k - 1].tolist() == box
        assert sample["mask"].dtype == torch.uint8
        assert np.array_equal(sample["mask"].numpy(), np.any(masks, 0).astype(np.uint8))
        assert sample["labels"].tolist() == [1] * len(masks)
        assert sample["meta"]["overlap_pixels"] == 0 and sample["meta"]["empty_masks"] == 0


def test_dsb_rgb_keeps_three_channels(dsb_dir, sizes):
    assert DSB2018Dataset(dsb_dir, rgb=True)[0]["image"].shape == (
        3,
        sizes.DSB_SIZE,
        sizes.DSB_SIZE,
    )


def test_dsb_splits_by_image(dsb_dir):
    everything = DSB2018Dataset(dsb_dir).ids
    check_disjoint_cover(
        everything,
        DSB2018Dataset(dsb_dir, split="train").ids,
        DSB2018Dataset(dsb_dir, split="val").ids,
    )


def test_dsb_mask_size_mismatch_names_the_mask(dsb_dir, copy_of, sizes):
    root = copy_of(dsb_dir)
    sid = sorted(p.name for p in root.iterdir())[1]
    mask = sorted((root / sid / "masks").iterdir())[0]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    with pytest.raises(ValueError, match=mask.name):
        DSB2018Dataset(root)
    with pytest.warns(UserWarning, match="size mismatch: 1"):
        ds = DSB2018Dataset(root, skip_bad=True)
    assert len(ds) == sizes.DSB_N - 1 and ds.skipped[0][0] == sid


def test_dsb_missing_image_names_it(dsb_dir, copy_of):
    root = copy_of(dsb_dir)
    sid = sorted(p.name for p in root.iterdir())[0]
    (root / sid / "images" / f"{sid}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{sid}.png"):
        DSB2018Dataset(root)


def test_dsb_overlapping_masks_are_counted(dsb_dir, copy_of):
    root = copy_of(dsb_dir)
    sid = sorted(p.name for p in root.iterdir())[0]
    masks = sorted((root / sid / "masks").iterdir())
    shutil.copy(masks[0], root / sid / "masks" / ("f" * 64 + ".png"))  # a duplicate, last
    sample = DSB2018Dataset(root)[0]
    area = int((np.asarray(Image.open(masks[0])) > 0).sum())
    assert sample["meta"]["overlap_pixels"] == area and sample["meta"]["empty_masks"] == 1
    assert len(sample["boxes"]) == len(masks)


def test_dsb_truncated_png_names_the_file(dsb_dir, copy_of, sizes):
    root = copy_of(dsb_dir)
    sids = sorted(p.name for p in root.iterdir())
    image = truncate(root / sids[0] / "images" / f"{sids[0]}.png")
    mask = truncate(sorted((root / sids[2] / "masks").iterdir())[0], 0.9)
    with pytest.raises(DataError, match=rf"{image}: not a readable image file") as info:
        DSB2018Dataset(root)
    assert info.value.__cause__ is not None  # PIL's error, chained
    with pytest.warns(UserWarning, match="unreadable file: 2"):
        ds = DSB2018Dataset(root, skip_bad=True)
    assert len(ds) == sizes.DSB_N - 2 and [i for i, _ in ds.skipped] == [sids[0], sids[2]]
    assert mask.name in ds.skipped[1][1]
    # a file damaged after the dataset was built: the error names it when read
    victim = truncate(root / sids[1] / "images" / f"{sids[1]}.png")
    with pytest.raises(DataError, match=rf"{victim}: not a readable image file"):
        ds[0]


# ----------------------------------------------------------------------------- image folders


@pytest.fixture
def folder(tmp_path, rng, rsna_dir):
    """images/ and masks/ in four formats: a PNG, a TIFF, a DICOM (RSNA's) and a NIfTI."""
    nib = pytest.importorskip("nibabel")
    images, masks = tmp_path / "f" / "images", tmp_path / "f" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    arrays = {}
    a = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(a).save(images / "a.png")
    arrays["a"] = a
    b = rng.normal(size=(25, 15)).astype(np.float32)
    tifffile.imwrite(images / "b.tif", b)
    arrays["b"] = b
    dcm = sorted((rsna_dir / "stage_2_train_images").iterdir())[0]
    shutil.copy(dcm, images / "c.dcm")
    arrays["c"] = pydicom.dcmread(dcm).pixel_array
    d = rng.normal(size=(12, 18)).astype(np.float32)
    nib.save(nib.Nifti1Image(d.T.copy(), np.eye(4)), images / "d.nii.gz")  # NIfTI is (x, y)
    arrays["d"] = d
    labels = {}
    for stem, arr in arrays.items():
        lab = rng.integers(0, 3, arr.shape[:2], dtype=np.uint8)
        labels[stem] = lab
        if stem == "b":
            tifffile.imwrite(masks / "b.tiff", lab)
        elif stem == "d":
            nib.save(nib.Nifti1Image(lab.T.copy(), np.eye(4)), masks / "d.nii")
        else:
            Image.fromarray(lab).save(masks / f"{stem}.png")
    (images / "notes.txt").write_text("ignored")
    return tmp_path / "f", arrays, labels


def test_image_folder_reads_every_format(folder):
    root, arrays, labels = folder
    ds = ImageFolderDataset(root)
    assert ds.ids == ["a", "b", "c", "d"]
    for sample in ds:
        stem = sample["id"]
        assert sample["image"].shape == (1, *arrays[stem].shape)
        assert np.allclose(sample["image"][0].numpy(), arrays[stem])
        assert sample["mask"].dtype == torch.uint8
        assert np.array_equal(sample["mask"].numpy(), labels[stem] > 0)
    kept = ImageFolderDataset(root, binarize=False)[3]["mask"].numpy()
    assert np.array_equal(kept, labels["d"])


def test_image_folder_missing_mask_names_the_image(folder):
    root = folder[0]
    (root / "masks" / "b.tiff").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.tif: no mask with stem 'b'"):
        ImageFolderDataset(root)
    with pytest.warns(UserWarning, match="missing mask: 1"):
        ds = ImageFolderDataset(root, skip_bad=True)
    assert ds.ids == ["a", "c", "d"] and ds.skipped[0][0] == "b"


def test_image_folder_size_mismatch_names_the_mask(folder):
    root = folder[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"masks/a\.png: mask size"):
        ImageFolderDataset(root)
    with pytest.warns(UserWarning, match="size mismatch: 1"):
        assert len(ImageFolderDataset(root, skip_bad=True)) == 3


@pytest.mark.parametrize("name", ["images/a.png", "masks/a.png", "images/b.tif", "masks/d.nii"])
def test_image_folder_damaged_file_names_it(folder, name):
    root = folder[0]
    path = root / name
    if name.endswith(".tif"):
        path.write_bytes(b"II*\x00" + b"\xff" * 60)  # a TIFF header pointing nowhere
    else:
        truncate(path, 0.3 if name.endswith(".nii") else 0.6)
    with pytest.raises(DataError, match=rf"{path}: not a readable"):
        ImageFolderDataset(root)
    with pytest.warns(UserWarning, match="unreadable file: 1"):
        ds = ImageFolderDataset(root, skip_bad=True)
    assert len(ds) == 3 and name in ds.skipped[0][1]


def test_image_folder_file_damaged_after_construction(folder):
    root = folder[0]
    ds = ImageFolderDataset(root)
    truncate(root / "images" / "a.png")
    with pytest.raises(DataError, match=r"images/a\.png: not a readable image file"):
        ds[0]
    truncate(root / "images" / "c.dcm")
    with pytest.raises(DicomError, match=r"images/c\.dcm: "):
        ds[2]


def test_image_folder_splits_by_stem(folder):
    root = folder[0]
    check_disjoint_cover(
        "abcd",
        ImageFolderDataset(root, split="train", val_fraction=0.5).ids,
        ImageFolderDataset(root, split="val", val_fraction=0.5).ids,
    )


# ----------------------------------------------------------------------------- MRI


def mri_label(subject_dir):
    nib = pytest.importorskip("nibabel")
    return np.asarray(nib.load(subject_dir / "label.nii.gz").dataobj).transpose(2, 1, 0)


@pytest.mark.parametrize("plane, axis", [("transverse", 0), ("coronal", 1), ("sagittal", 2)])
def test_mri_slices_along_each_plane(mri_dir, sizes, plane, axis):
    from fastdet.data.dicom import load_dicom_series

    ds = MRISliceDataset(mri_dir, plane=plane)
    shape = sizes.MRI_SHAPE
    assert len(ds) == sizes.MRI_N * shape[axis]
    assert ds.subjects == [f"sub-{i:03d}" for i in range(1, sizes.MRI_N + 1)]
    volume, _ = load_dicom_series(mri_dir / "sub-002")
    label = mri_label(mri_dir / "sub-002")
    start = shape[axis]  # sub-002's slices follow sub-001's
    for i in (0, shape[axis] // 2):
        sample = ds[start + i]
        assert sample["id"] == f"sub-002/{plane}/{i:03d}"
        expect = np.take(volume, i, axis=axis)
        assert sample["image"].shape == (1, *expect.shape)
        assert np.array_equal(sample["image"][0].numpy(), expect)
        assert np.array_equal(sample["mask"].numpy(), np.take(label, i, axis=axis))
    assert sample["mask"].any()  # the middle slice crosses the brain
    assert len(sample["meta"]["spacing"]) == 2


def test_mri_splits_by_subject(mri_dir):
    train = MRISliceDataset(mri_dir, split="train", split_seed=2)
    val = MRISliceDataset(mri_dir, split="val", split_seed=2)
    check_disjoint_cover([f"sub-{i:03d}" for i in range(1, 5)], train.subjects, val.subjects)
    assert len(val.subjects) == 1
    assert {x["id"].split("/")[0] for x in val} == set(val.subjects)
    assert {train.index[i][0] for i in range(len(train))} == set(train.subjects)


def test_mri_subjects_restricts(mri_dir):
    assert MRISliceDataset(mri_dir, subjects=["sub-003"]).subjects == ["sub-003"]
    with pytest.raises(FileNotFoundError, match="sub-009"):
        MRISliceDataset(mri_dir, subjects=["sub-009"])


def test_mri_missing_label_names_the_folder(mri_dir, copy_of, sizes):
    root = copy_of(mri_dir)
    (root / "sub-002" / "label.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="sub-002: no label volume"):
        MRISliceDataset(root)
    with pytest.warns(UserWarning, match="missing file: 1"):
        ds = MRISliceDataset(root, skip_bad=True)
    assert ds.subjects == ["sub-001", "sub-003", "sub-004"] and ds.skipped[0][0] == "sub-002"


def test_mri_label_shape_mismatch_names_the_label(mri_dir, copy_of):
    root = copy_of(mri_dir)
    (root / "sub-001" / "label.nii.gz").unlink()
    np.save(root / "sub-001" / "label.npy", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"sub-001/label\.npy: label shape \(3, 4, 5\)"):
        MRISliceDataset(root)


def test_mri_npz_label(mri_dir, copy_of):
    root = copy_of(mri_dir)
    label = mri_label(root / "sub-001")
    (root / "sub-001" / "label.nii.gz").unlink()
    np.savez_compressed(root / "sub-001" / "label.npz", label=label)
    ds = MRISliceDataset(root, subjects=["sub-001"])
    assert np.array_equal(np.stack([s["mask"].numpy() for s in ds]), label)


def test_mri_nifti_image_and_a_differently_oriented_label(tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    subject = tmp_path / "case1"
    subject.mkdir()
    image = rng.normal(size=(6, 7, 5)).astype(np.float32)  # NIfTI (x, y, z)
    label = (image > 0.5).astype(np.uint8)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])  # RAS+: (x, y, z) increase to R, A, S
    nib.save(nib.Nifti1Image(image, affine), subject / "image.nii.gz")
    # the label stored with x flipped and the axes in (z, y, x) order, its affine saying so
    flipped = np.ascontiguousarray(label[::-1].transpose(2, 1, 0))
    swap = np.array([[0, 0, -2.0, 10.0], [0, 3.0, 0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(flipped, swap), subject / "label.nii.gz")
    ds = MRISliceDataset(tmp_path, plane="transverse")
    assert len(ds) == 5  # the z axis of the image
    for k, sample in enumerate(ds):
        assert np.array_equal(sample["image"][0].numpy(), image[:, :, k].T)
        assert np.array_equal(sample["mask"].numpy(), label[:, :, k].T)
        assert sample["meta"]["spacing"] == (3.0, 2.0)
    assert len(MRISliceDataset(tmp_path, plane="sagittal")) == 6


def test_mri_damaged_files_name_the_file(mri_dir, copy_of, sizes):
    root = copy_of(mri_dir)
    label = truncate(root / "sub-001" / "label.nii.gz")
    with pytest.raises(DataError, match=rf"{label}: not a readable NIfTI file"):
        MRISliceDataset(root, subjects=["sub-001"])
    dicom = truncate(sorted((root / "sub-003").glob("*.dcm"))[2], 0.8)
    with pytest.raises(DicomError, match=rf"{dicom}: "):
        MRISliceDataset(root, subjects=["sub-003"])
    np.save(root / "sub-004" / "label.npy", np.zeros(3))
    (root / "sub-004" / "label.nii.gz").unlink()
    truncate(root / "sub-004" / "label.npy")
    with pytest.warns(UserWarning, match="bad volume: 3"):
        ds = MRISliceDataset(root, skip_bad=True)
    assert ds.subjects == ["sub-002"]
    assert "label.npy: not a readable NumPy file" in dict(ds.skipped)["sub-004"]


def test_mri_rejects_an_unknown_plane(mri_dir):
    with pytest.raises(ValueError, match="plane must be one of"):
        MRISliceDataset(mri_dir, plane="axial")


def test_no_warning_on_clean_data(rsna_dir, dsb_dir, mri_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RSNADataset(rsna_dir)
        DSB2018Dataset(dsb_dir)
        MRISliceDataset(mri_dir)
