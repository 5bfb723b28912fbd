"""Small synthetic datasets written in the exact on-disk layouts of the real ones.

Each writer makes images with structure a model can learn and writes them the way the real
dataset stores them, so the same loaders, commands and tests run on both:

``synth_rsna``  -- RSNA Pneumonia Detection Challenge (stage 2)::

    OUT/stage_2_train_labels.csv          patientId,x,y,width,height,Target (one row per box;
                                          Target 0 rows have empty x, y, width, height)
    OUT/stage_2_detailed_class_info.csv   patientId,class (one row per label row, as Kaggle's)
    OUT/stage_2_train_images/<patientId>.dcm
    OUT/lungs/images/<patientId>.png      the same pixels as uint8 grey PNG
    OUT/lungs/masks/<patientId>.png       its lung fields, 0/255 (the `folders` layout)

  The DICOM files are CR, MONOCHROME2, 8-bit unsigned, square ``size`` pixels (Kaggle's are
  1024), PixelSpacing scaled so the field of view matches Kaggle's 1024 x 0.143 mm, with the tags
  Kaggle kept (PatientID = patientId, BodyPartExamined CHEST, ViewPosition PA/AP, ...). Kaggle's
  pixel data is JPEG baseline; ours is uncompressed (Explicit VR Little Endian), because pydicom
  cannot encode JPEG without extra packages. About half the patients are positive, with 1-3
  opacities (soft bright blobs inside the dark lungs); their boxes are the opacities' pixel extents.

``synth_dsb2018`` -- 2018 Data Science Bowl stage1_train::

    OUT/<id>/images/<id>.png              RGBA uint8 (grey fluorescence, alpha 255)
    OUT/<id>/masks/<mask_id>.png          one 0/255 uint8 mask per nucleus, non-overlapping

  ids are 64 hex digits. Nuclei are textured ellipses; some come as touching pairs.

``synth_mri`` -- per-subject MRI series (the fetal brain case)::

    OUT/<subject>/IM_<nnnn>.dcm           one MR slice per file, int16 with RescaleSlope and
                                          RescaleIntercept; the file names are in shuffled order,
                                          so readers must sort by ImagePositionPatient
    OUT/<subject>/label.nii.gz            uint8 brain label (1), when nibabel is importable;
    OUT/<subject>/label.npz               otherwise: key "label" [Z, H, W] in slice order
                                          (sorted along the slice normal), key "spacing"
                                          (z, y, x) mm

  The NIfTI label holds the array in NIfTI's (x, y, z) = (column, row, slice) order with an
  affine (RAS, mm) consistent with the DICOM geometry: axial slices, identity orientation.

Determinism: the content depends only on the arguments. Every item draws from its own stream
``default_rng([seed, kind, index])`` (so DSB samples and MRI subjects do not depend on `n`; which
RSNA patients are positive is drawn once for all `n` of them); UIDs come from
``generate_uid(entropy_srcs=...)``, never from the clock; PNG, DICOM and gzip outputs carry no
timestamps, so a rerun gives byte-identical files.

Interrupted runs: each DSB sample and each MRI subject is written into a hidden temporary folder
and renamed into place when complete; the RSNA CSVs are written last, by rename. The output folder
must be empty or absent, so a rerun never mixes with an older dataset.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

KINDS = ("rsna", "dsb2018", "mri")
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_CLASSES = "stage_2_detailed_class_info.csv"
RSNA_IMAGES = "stage_2_train_images"
RSNA_HEADER = ("patientId", "x", "y", "width", "height", "Target")
RSNA_CLASS_HEADER = ("patientId", "class")
RSNA_CLASS_NAMES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")

_CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
_KIND_CODE = {
    "rsna": 1,
    "dsb2018": 2,
    "mri": 3,
    "rsna-lookalike": 4,
}  # separates the random streams of the kinds


# ----------------------------------------------------------------------------- shared helpers


def _rng(seed: int, kind: str, *index: int) -> np.random.Generator:
    """The stream of one item: independent of how many items are written."""
    if int(seed) < 0:
        raise ValueError(f"synthetic data: seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([int(seed), _KIND_CODE[kind], *index])


def _uid(seed: int, *parts) -> str:
    """A DICOM UID derived from the seed and the parts (no clock, no randomness)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["fastdet.synthetic", str(seed), *map(str, parts)]))


def _prepare_out(out) -> Path:
    """Creates `out`; refuses a non-empty folder so old and new files never mix."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"synthetic data: output folder {out} is not empty; choose a new folder or remove it"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _replace(tmp: Path, final: Path) -> Path:
    os.replace(tmp, final)
    return final


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    """Boolean mask of the ellipse on the coordinate grids yy, xx (any common units)."""
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (texture, bias fields)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / (f.std() + 1e-12)


def _write_dicom(
    path: Path, fields: dict, pixels: np.ndarray, sop_class: str, sop_uid: str, bits_stored: int
) -> Path:
    """Writes a single-frame uncompressed DICOM file (with preamble and file meta) by rename."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    for key, value in fields.items():
        setattr(ds, key, value)
    # set_pixel_data would otherwise replace our seed-derived SOPInstanceUID by a random one
    ds.set_pixel_data(
        np.ascontiguousarray(pixels), "MONOCHROME2", bits_stored, generate_instance_uid=False
    )
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    return _replace(tmp, path)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    # uint8 [H, W] -> L, [H, W, 3] -> RGB, [H, W, 4] -> RGBA
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG")


def _write_png_atomic(path: Path, array: np.ndarray) -> None:
    """_write_png to a temporary name, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(tmp, format="PNG")
    _replace(tmp, path)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a non-empty 2-D mask in pixel edges: x2 = last column + 1."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# ----------------------------------------------------------------------------- RSNA


def _chest_anatomy(rng, size: int):
    """A chest-like radiograph without opacities, float in ~[0, 1], and its lung masks.

    Returns (image float64 [S, S], lungs bool [2, S, S]) with lungs[0] on the image's left.
    Coordinates are fractions of the image side so the anatomy does not depend on `size`."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx = 0.5 + rng.normal(0, 0.015)
    width = rng.uniform(0.9, 1.05)  # patient habitus
    body = _ellipse(yy, xx, 0.58, cx, 0.56, 0.43 * width)
    lungs = (
        np.stack(
            [
                _ellipse(
                    yy,
                    xx,
                    0.44 + rng.normal(0, 0.01),
                    cx + side * 0.17 * width,
                    rng.uniform(0.25, 0.29),
                    rng.uniform(0.11, 0.135) * width,
                    side * 0.12,
                )
                for side in (-1, 1)
            ]
        )
        & body
    )
    heart = _ellipse(yy, xx, 0.6, cx + 0.06, 0.14, rng.uniform(0.11, 0.15))
    mediastinum = (np.abs(xx - cx) < 0.045) & (yy > 0.12) & body
    lungs &= ~heart & ~mediastinum
    img = np.full((size, size), 0.04)
    img[body] = 0.55
    img[lungs.any(0)] = 0.2
    img[heart & body] = 0.62
    img[mediastinum] = 0.78
    # Ribs: curved bright stripes, visible where the lungs are dark.
    ribs = (0.5 + 0.5 * np.sin(2 * np.pi * (yy * 8.5 + 2.5 * (xx - cx) ** 2))) ** 6
    img += 0.1 * ribs * lungs.any(0)
    img = ndimage.gaussian_filter(img, 0.008 * size)
    img += 0.04 * _smooth_noise(rng, img.shape, 0.02 * size) * body
    return img, lungs


def _opacities(rng, lungs: np.ndarray, count: int, size: int):
    """Places `count` non-overlapping opacities inside the lungs.

    Returns (signal float64 [S, S] to add to the image, label int32 [S, S] numbering the
    opacities 1..K, boxes list of (x, y, width, height) in pixels)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    label = np.zeros((size, size), np.int32)
    boxes = []
    for _ in range(50 * count):  # rejection sampling; gives up rather than loop forever
        if len(boxes) == count:
            break
        lung = lungs[rng.integers(2)]
        ys, xs = np.nonzero(lung)
        k = rng.integers(len(ys))
        region = (
            _ellipse(
                yy,
                xx,
                ys[k],
                xs[k],
                rng.uniform(0.05, 0.11) * size,
                rng.uniform(0.04, 0.08) * size,
                rng.uniform(0, np.pi),
            )
            & lung
        )
        if region.sum() < (0.03 * size) ** 2 or (region & (label > 0)).any():
            continue
        label[region] = len(boxes) + 1
        boxes.append(_bbox(region))
    # Soft edges: the fill is blurred and textured, as consolidations look in radiographs.
    fill = np.zeros((size, size))
    for k in range(1, len(boxes) + 1):
        fill[label == k] = rng.uniform(0.22, 0.35)
    texture = 1 + 0.25 * _smooth_noise(rng, fill.shape, 0.01 * size)
    signal = ndimage.gaussian_filter(fill * texture, 0.008 * size)
    return signal, label, boxes


def _chest_radiograph(rng, size: int, n_opacities: int, return_lungs: bool = False):
    """A chest-like radiograph. Returns (image uint8 [S, S], boxes list of (x, y, w, h) ints,
    opacity label int32 [S, S] numbering the opacities 1..K), and with return_lungs the lung
    fields bool [2, S, S] (left, right; heart and mediastinum excluded) last."""
    img, lungs = _chest_anatomy(rng, size)
    signal, label, boxes = _opacities(rng, lungs, n_opacities, size)
    img = img + signal
    exposure, offset, gamma = rng.uniform(0.9, 1.1), rng.normal(0, 0.02), rng.uniform(0.85, 1.15)
    img = np.clip(img * exposure + offset, 0, 1) ** gamma
    img = img + rng.normal(0, 0.015, img.shape)  # quantum noise
    out = np.clip(np.round(img * 255), 0, 255).astype(np.uint8), boxes, label
    return (*out, lungs) if return_lungs else out


LOOKALIKES = ("mass", "effusion", "cardiomegaly", "haze")


def _lookalike(seed: int, i: int, image: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """A "No Lung Opacity / Not Normal" image with 1-2 findings that are not pneumonia but
    brighten the lungs as an opacity does: a mass or nodule (small, dense, sharp-edged), a
    pleural effusion blunting a lung base (a bright meniscus from below), an enlarged heart
    (its shadow widened over both lungs' inner parts) or diffuse haze over both lungs. Drawn
    from the patient's own look-alike stream, so the rest of the data is unchanged; returns
    uint8 [S, S]."""
    rng = _rng(seed, "rsna-lookalike", i)
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    both = lungs.any(0)
    add = np.zeros((size, size))
    for kind in rng.choice(LOOKALIKES, size=int(rng.integers(1, 3)), replace=False):
        lung = lungs[rng.integers(2)]
        ys, xs = np.nonzero(lung)
        if kind == "mass":
            k = rng.integers(len(ys))
            r = rng.uniform(0.025, 0.06) * size
            blob = _ellipse(yy, xx, ys[k], xs[k], r, r * rng.uniform(0.8, 1.2))
            add += rng.uniform(0.25, 0.4) * ndimage.gaussian_filter(blob * 1.0, 0.005 * size)
        elif kind == "effusion":
            top, bottom = ys.min(), ys.max()
            level = bottom - rng.uniform(0.15, 0.3) * (bottom - top)
            # the meniscus: higher at the chest wall than at the mediastinum
            side = np.sign(xs.mean() - size / 2)
            rise = 0.06 * size * np.clip(side * (xx - xs.mean()) / (np.ptp(xs) + 1), -1, 1)
            fluid = lung & (yy > level - rise)
            add += rng.uniform(0.3, 0.4) * ndimage.gaussian_filter(fluid * 1.0, 0.01 * size)
        elif kind == "cardiomegaly":
            # centred between the lungs, wider than the normal heart (~0.13 of the side)
            cx = np.nonzero(both)[1].mean()
            heart = _ellipse(yy, xx, 0.6 * size, cx, 0.17 * size, rng.uniform(0.2, 0.25) * size)
            shadow = ndimage.gaussian_filter((heart & both) * 1.0, 0.006 * size)
            add += rng.uniform(0.3, 0.4) * shadow
        else:  # diffuse haze: both lungs, patchy but everywhere
            haze = 0.5 + 0.5 * np.clip(_smooth_noise(rng, (size, size), 0.05 * size), -1, 1)
            add += rng.uniform(0.1, 0.16) * haze * ndimage.gaussian_filter(both * 1.0, 0.01 * size)
    img = image / 255.0 + add + rng.normal(0, 0.01, add.shape) * (add > 0.01)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _rsna_patient(seed: int, i: int, positive: bool, size: int):
    """One patient: (patientId, image uint8, boxes, class name, DICOM tags, lungs bool
    [2, S, S])."""
    rng = _rng(seed, "rsna", i)
    pid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    n_opacities = int(rng.integers(1, 4)) if positive else 0
    image, boxes, _, lungs = _chest_radiograph(rng, size, n_opacities, return_lungs=True)
    if positive:
        cls = RSNA_CLASS_NAMES[2]
    else:
        cls = RSNA_CLASS_NAMES[int(rng.integers(2))]
    view = "PA" if rng.random() < 0.55 else "AP"
    spacing = round(0.143 * 1024 / size, 6)  # Kaggle's field of view at any size
    tags = {
        "SpecificCharacterSet": "ISO_IR 100",
        "StudyDate": "19010101",
        "StudyTime": "000000.00",
        "AccessionNumber": "",
        "Modality": "CR",
        "ConversionType": "WSD",
        "ReferringPhysicianName": "",
        "SeriesDescription": f"view: {view}",
        "PatientName": pid,
        "PatientID": pid,
        "PatientBirthDate": "",
        "PatientSex": "M" if rng.random() < 0.55 else "F",
        "PatientAge": f"{int(rng.integers(18, 85)):03d}Y",  # Kaggle's "51" is not a valid AS
        "BodyPartExamined": "CHEST",
        "ViewPosition": view,
        "StudyInstanceUID": _uid(seed, "rsna", pid, "study"),
        "SeriesInstanceUID": _uid(seed, "rsna", pid, "series"),
        "StudyID": "",
        "SeriesNumber": 1,
        "InstanceNumber": 1,
        "PatientOrientation": "",
        "PixelSpacing": [spacing, spacing],
    }
    return pid, image, boxes, cls, tags, lungs


def synth_rsna(out, n: int = 16, seed: int = 0, size: int = 256, lookalikes: bool = False) -> Path:
    """Writes `n` patients in the RSNA Pneumonia (stage 2) layout; returns the folder.

    round(n / 2) patients, chosen at random, are positive with 1-3 opacities each; the rest are
    negatives (class "Normal" or "No Lung Opacity / Not Normal") with one Target 0 row. Each
    patient's image and lung-field mask also go to OUT/lungs/images/<patientId>.png and
    OUT/lungs/masks/<patientId>.png (uint8 grey, mask 0/255): the folders layout of
    `train seg --data OUT/lungs --layout folders`.

    lookalikes=True: the "No Lung Opacity / Not Normal" negatives carry 1-2 findings that are not
    pneumonia and fool a box detector (see _lookalike: a mass or nodule, an effusion, an
    enlarged heart, diffuse haze; no boxes), "Normal" stays clean; every other byte is as
    without it."""
    if n < 1 or size < 64:
        raise ValueError(f"synth_rsna: need n >= 1 and size >= 64, got n={n}, size={size}")
    out = _prepare_out(out)
    images = out / RSNA_IMAGES
    images.mkdir()
    lung_images, lung_masks = out / "lungs" / "images", out / "lungs" / "masks"
    lung_images.mkdir(parents=True)
    lung_masks.mkdir()
    positive = np.zeros(n, bool)
    positive[_rng(seed, "rsna").permutation(n)[: round(n / 2)]] = True
    label_rows, class_rows = [], []
    for i in range(n):
        pid, image, boxes, cls, tags, lungs = _rsna_patient(seed, i, bool(positive[i]), size)
        if lookalikes and cls == RSNA_CLASS_NAMES[1]:
            image = _lookalike(seed, i, image, lungs)
        _write_png_atomic(lung_images / f"{pid}.png", image)
        _write_png_atomic(lung_masks / f"{pid}.png", lungs.any(0).astype(np.uint8) * 255)
        _write_dicom(
            images / f"{pid}.dcm",
            tags,
            image,
            _CR_STORAGE,
            _uid(seed, "rsna", pid, "image"),
            bits_stored=8,
        )
        # Kaggle writes the coordinates as floats ("264.0") and leaves them empty for Target 0.
        rows = [[pid, f"{x:.1f}", f"{y:.1f}", f"{w:.1f}", f"{h:.1f}", 1] for x, y, w, h in boxes]
        rows = rows or [[pid, "", "", "", "", 0]]
        label_rows += rows
        class_rows += [[pid, cls]] * len(rows)
    # The CSVs go last, so an interrupted run never names an image that was not written.
    _write_csv(out / RSNA_CLASSES, RSNA_CLASS_HEADER, class_rows)
    _write_csv(out / RSNA_LABELS, RSNA_HEADER, label_rows)
    return out


def _write_csv(path: Path, header, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    _replace(tmp, path)


# ----------------------------------------------------------------------------- DSB-2018


def _place_nucleus(rng, label, centre, radii, angle, partner: int = 0) -> bool:
    """Paints the next instance id into `label` at the free pixels of an ellipse.

    A lone nucleus (partner 0) must keep a 2-pixel gap from all others; the second of a touching
    pair may touch only its partner, whose pixels it does not take. Keeps the largest connected
    piece; refuses (returns False) when fewer than 12 pixels remain."""
    from skimage.draw import ellipse

    rr, cc = ellipse(centre[0], centre[1], radii[0], radii[1], shape=label.shape, rotation=angle)
    new = np.zeros(label.shape, bool)
    new[rr, cc] = True
    others = (label > 0) & (label != partner)
    if (ndimage.binary_dilation(new, iterations=2) & others).any():
        return False
    new &= label == 0
    pieces, count = ndimage.label(new)
    if count > 1:
        new = pieces == 1 + np.argmax(ndimage.sum(new, pieces, range(1, count + 1)))
    if new.sum() < 12:
        return False
    label[new] = label.max() + 1
    return True


def _nuclei_labels(rng, size: int) -> np.ndarray:
    """Instance label image int32 [S, S] (0 background, 1..K nuclei), about a third of them in
    touching pairs. Nuclei have radii of 4-10 pixels whatever the image size, as in the real
    data; their number grows with the area."""
    label = np.zeros((size, size), np.int32)
    target = int(rng.integers(8, 15) * (size / 128) ** 2)
    for _ in range(30 * target):
        if label.max() >= target:
            break
        radii = rng.uniform(4, 9, 2)
        centre = rng.uniform(0, size, 2)
        angle = rng.uniform(-np.pi, np.pi)
        if not _place_nucleus(rng, label, centre, radii, angle):
            continue
        if rng.random() < 0.35:  # a touching pair: the second overlaps the first and yields
            first = int(label.max())
            radii2 = rng.uniform(4, 9, 2)
            d = 0.75 * (radii.mean() + radii2.mean())
            t = rng.uniform(-np.pi, np.pi)
            centre2 = centre + d * np.array([np.sin(t), np.cos(t)])
            _place_nucleus(rng, label, centre2, radii2, rng.uniform(-np.pi, np.pi), first)
    return label


def _fluorescence(rng, label: np.ndarray) -> np.ndarray:
    """A fluorescence-like grey image uint8 [S, S] of the nuclei in `label`: textured bright
    nuclei with dimmer rims (so touching ones are separable), on a dark uneven background."""
    from skimage.segmentation import find_boundaries

    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, int(label.max()))])
    img = brightness[label] * (1 + 0.15 * _smooth_noise(rng, label.shape, 1.2))
    img *= np.where(find_boundaries(label, mode="inner"), 0.6, 1.0)
    img = ndimage.gaussian_filter(img, 0.8)
    img += 0.04 + 0.02 * _smooth_noise(rng, label.shape, label.shape[0] / 4)
    img += rng.normal(0, 0.015, label.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _dsb_sample(out: Path, seed: int, i: int, size: int) -> Path:
    rng = _rng(seed, "dsb2018", i)
    sid = rng.bytes(32).hex()
    label = _nuclei_labels(rng, size)
    grey = _fluorescence(rng, label)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], -1)  # DSB's PNGs are RGBA
    tmp = out / f".{sid}.tmp"
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    _write_png(tmp / "images" / f"{sid}.png", rgba)
    for k in range(1, int(label.max()) + 1):
        _write_png(
            tmp / "masks" / f"{rng.bytes(32).hex()}.png",
            np.where(label == k, 255, 0).astype(np.uint8),
        )
    return _replace(tmp, out / sid)


def synth_dsb2018(out, n: int = 8, seed: int = 0, size: int = 128) -> Path:
    """Writes `n` images in the DSB-2018 stage1_train layout; returns the folder."""
    if n < 1 or size < 32:
        raise ValueError(f"synth_dsb2018: need n >= 1 and size >= 32, got n={n}, size={size}")
    out = _prepare_out(out)
    for i in range(n):
        _dsb_sample(out, seed, i, size)
    return out


# ----------------------------------------------------------------------------- MRI

_MRI_FOV = (160.0, 240.0, 240.0)  # (z, y, x) field of view in mm, whatever the shape


def _ellipsoid(points, centre, axes, rotation) -> np.ndarray:
    """Boolean [...] mask of the rotated ellipsoid at `points` [..., 3] (mm)."""
    q = (points - centre) @ rotation
    return ((q / axes) ** 2).sum(-1) <= 1.0


def _mri_phantom(rng, shape):
    """An MRI-like volume: a bright fluid-filled ellipsoid (uterus) inside a body, holding a
    fetal head whose brain is an ellipsoid (label 1) with bright ventricles. T2-like contrast,
    multiplicative bias field and Rician noise. Returns (signal float64 [Z, Y, X] in ~[0, 1],
    label uint8 [Z, Y, X], spacing (z, y, x) mm)."""
    from scipy.spatial.transform import Rotation

    spacing = np.array(_MRI_FOV) / np.array(shape)
    grids = np.meshgrid(
        *[(np.arange(n) + 0.5 - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij"
    )
    pts = np.stack(grids, -1)
    eye = np.eye(3)
    body = _ellipsoid(pts, 0, [1e4, 112, 116], eye)  # a cylinder along z: air at the corners
    uterus_axes = np.array([70, 92, 100]) * rng.uniform(0.92, 1.0, 3)
    uterus = _ellipsoid(pts, 0, uterus_axes, eye)
    brain_axes = rng.uniform([36, 28, 31], [44, 34, 38])
    rot = Rotation.from_euler("zyx", rng.uniform(-0.5, 0.5, 3)).as_matrix()
    head_axes = brain_axes + 10  # scalp and skull
    room = uterus_axes.min() - head_axes.max() - 3  # keeps the head inside the uterus
    centre = rng.uniform(-1, 1, 3) * max(room, 0) / np.sqrt(3)
    head = _ellipsoid(pts, centre, head_axes, rot)
    brain = _ellipsoid(pts, centre, brain_axes, rot)
    img = np.where(body, 0.25, 0.0)
    img[uterus] = 0.85
    img[head] = 0.3
    img[brain] = 0.55 + 0.05 * _smooth_noise(rng, shape, 1.0)[brain]
    for side in (-1, 1):  # lateral ventricles
        v = centre + rot @ np.array([0, 0, side * 0.22 * brain_axes[2]])
        img[_ellipsoid(pts, v, brain_axes * [0.45, 0.4, 0.12], rot)] = 0.9
    img = ndimage.gaussian_filter(img, 0.6)
    bias = np.exp(
        0.25 * (pts / np.array(_MRI_FOV)) @ rng.uniform(-1, 1, 3)
        + 0.2 * _smooth_noise(rng, shape, np.array(shape) / 4)
    )
    sigma = 0.03
    img = np.hypot(img * bias + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return img, brain.astype(np.uint8), tuple(float(s) for s in spacing)


def _mri_slice_tags(seed, subject, k, z, spacing, origin) -> dict:
    dz, dy, dx = spacing
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "StudyDate": "20000101",
        "StudyTime": "000000",
        "Modality": "MR",
        "Manufacturer": "fastdet synthetic",
        "SeriesDescription": "T2 SSFSE (synthetic)",
        "PatientName": subject,
        "PatientID": subject,
        "BodyPartExamined": "ABDOMEN",
        "ScanningSequence": "SE",
        "SequenceVariant": "SK",
        "MRAcquisitionType": "2D",
        "MagneticFieldStrength": 1.5,
        "EchoTime": 90.0,
        "RepetitionTime": 1200.0,
        "SliceThickness": dz,
        "SpacingBetweenSlices": dz,
        "StudyInstanceUID": _uid(seed, "mri", subject, "study"),
        "SeriesInstanceUID": _uid(seed, "mri", subject, "series"),
        "FrameOfReferenceUID": _uid(seed, "mri", subject, "frame"),
        "SeriesNumber": 1,
        "InstanceNumber": k + 1,
        "ImagePositionPatient": [origin[0], origin[1], round(z, 4)],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "SliceLocation": round(z, 4),
        "PixelSpacing": [dy, dx],
        "RescaleIntercept": -100,
        "RescaleSlope": 0.25,
        "WindowCenter": 400,
        "WindowWidth": 800,
    }


def _write_label(folder: Path, label: np.ndarray, spacing, origin) -> Path:
    """label.nii.gz (NIfTI (x, y, z) order, RAS affine matching the DICOM) when nibabel is
    importable, else label.npz ("label" [Z, H, W], "spacing"), both byte-deterministic."""
    try:
        import nibabel as nib
    except ImportError:
        return _write_npz(folder / "label.npz", label=label, spacing=np.asarray(spacing))
    dz, dy, dx = spacing
    # DICOM LPS position of voxel (i, j, k) is origin + (i dx, j dy, k dz); RAS negates x, y.
    affine = np.array(
        [[-dx, 0, 0, -origin[0]], [0, -dy, 0, -origin[1]], [0, 0, dz, origin[2]], [0, 0, 0, 1]],
        float,
    )
    img = nib.Nifti1Image(np.ascontiguousarray(label.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = folder / "label.nii.gz"
    nib.save(img, path)  # nibabel's gzip writer stores mtime 0, so the bytes are reproducible
    return path


def _write_npz(path: Path, **arrays) -> Path:
    """np.savez_compressed without the zip entries' clock timestamps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    return path


def _mri_subject(out: Path, seed: int, i: int, shape) -> Path:
    rng = _rng(seed, "mri", i)
    subject = f"sub-{i + 1:03d}"
    signal, label, spacing = _mri_phantom(rng, shape)
    value = signal * 1000.0  # modality values; stored = (value - intercept) / slope
    stored = np.clip(np.round((value + 100) / 0.25), -32768, 32767).astype(np.int16)
    dz, dy, dx = spacing
    origin = (-_MRI_FOV[2] / 2 + dx / 2, -_MRI_FOV[1] / 2 + dy / 2, -_MRI_FOV[0] / 2 + dz / 2)
    tmp = out / f".{subject}.tmp"
    tmp.mkdir()
    names = rng.permutation(shape[0])  # file names deliberately out of slice order
    for k in range(shape[0]):
        tags = _mri_slice_tags(seed, subject, k, origin[2] + k * dz, spacing, origin)
        _write_dicom(
            tmp / f"IM_{names[k]:04d}.dcm",
            tags,
            stored[k],
            _MR_STORAGE,
            _uid(seed, "mri", subject, "slice", k),
            bits_stored=16,
        )
    _write_label(tmp, label, spacing, origin)
    return _replace(tmp, out / subject)


def synth_mri(out, n: int = 4, seed: int = 0, shape=(32, 64, 64)) -> Path:
    """Writes `n` subjects (sub-001, ...) of axial MR series with brain labels; returns the
    folder. `shape` is (slices, rows, columns); the field of view is 160 x 240 x 240 mm."""
    shape = tuple(int(s) for s in shape)
    if n < 1 or len(shape) != 3 or min(shape) < 8:
        raise ValueError(
            f"synth_mri: need n >= 1 and a 3-D shape with sides >= 8, got n={n}, shape={shape}"
        )
    out = _prepare_out(out)
    for i in range(n):
        _mri_subject(out, seed, i, shape)
    return out


# ----------------------------------------------------------------------------- dispatch


def synth(
    kind: str,
    out,
    n: int | None = None,
    seed: int = 0,
    lookalikes: bool = False,
    size: int | None = None,
) -> Path:
    """Writes the synthetic dataset `kind` ("rsna", "dsb2018" or "mri") into `out` with `n`
    items (the writer's default when None) and returns the folder. lookalikes: synth_rsna's
    (a ValueError for the other kinds). size: the image side (rsna, dsb2018) or the in-plane
    side (mri: its slices keep the default count); None: the writer's default."""
    writers = {"rsna": synth_rsna, "dsb2018": synth_dsb2018, "mri": synth_mri}
    if kind not in writers:
        raise ValueError(f"synth: kind must be one of {KINDS}, got {kind!r}")
    kwargs = {} if n is None else {"n": int(n)}
    if size is not None:
        if size < 32:
            raise ValueError(f"synth: --size must be >= 32, got {size}")
        kwargs.update({"shape": (32, size, size)} if kind == "mri" else {"size": int(size)})
    if lookalikes:
        if kind != "rsna":
            raise ValueError(f"synth: lookalikes are rsna's (chest findings), not {kind}'s")
        kwargs["lookalikes"] = True
    return writers[kind](out, seed=seed, **kwargs)
