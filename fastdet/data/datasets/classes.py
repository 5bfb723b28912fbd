"""Class folders: `root/<class>/<image>`, torchvision ImageFolder's convention for
image-level labels."""

from __future__ import annotations

from pathlib import Path

from .common import _Checked, _files, _folder, _subfolders, chosen_ids, image_tensor, read_image_2d
from .folders import _shape_2d

CLASS_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


class ClassFolderDataset(_Checked):
    """`root/<class>/*.png|jpg|jpeg|tif|tiff|dcm`: one class per folder, the classes sorted by
    folder name (index 0 first), as torchvision's ImageFolder; hidden folders and files and
    other extensions are ignored (subfolders of a class folder too).

    Sample: "image" float32 [C, H, W] (rgb=False: one channel, colour averaged and alpha
    dropped; True: 3; None: the file's), "label" int (the class index), "id" "<class>/<file
    name>", "meta": path, class (its name), size. `classes` lists the names, `targets` each
    item's label (no image read). `split` "train"/"val" keeps each class's share in both
    (stratified), with `split_seed`.

    Checked at construction: root exists, it has class folders and every class folder has an
    image (FileNotFoundError / ValueError naming it, as ImageFolder refuses empty classes),
    headers are readable and PNGs whole (DataError naming the file; skipped with skip_bad)."""

    def __init__(
        self,
        root,
        rgb: bool | None = False,
        skip_bad: bool = False,
        transform=None,
        **split,
    ):
        self.root, self.rgb = _folder(root), rgb
        super().__init__(skip_bad, transform)
        self.classes = _subfolders(self.root)
        if not self.classes:
            raise ValueError(f"{self.root}: no class folders (expected root/<class>/<image>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        files = {}
        for c in self.classes:
            found = [p for p in _files(self.root / c) if p.suffix.lower() in CLASS_EXTS]
            if not found:
                raise ValueError(
                    f"{self.root / c}: a class folder without images ({', '.join(CLASS_EXTS)})"
                )
            files.update({f"{c}/{p.name}": (p, c) for p in found})
        strata = {k: c for k, (_, c) in files.items()}
        chosen = chosen_ids(sorted(files), strata, **split)
        self._check_all(chosen, lambda k: self._check(k, *files[k]))
        self.targets = [self.class_to_idx[it[2]] for it in self.items]

    def _check(self, key: str, path: Path, cls: str):
        try:
            _shape_2d(path)
        except ValueError as e:
            return self._bad(key, "unreadable file", e)
        return key, path, cls

    def __getitem__(self, index: int) -> dict:
        key, path, cls = self.items[index]
        image = read_image_2d(path)
        sample = {
            "image": image_tensor(image, rgb=self.rgb),
            "label": self.class_to_idx[cls],
            "id": key,
            "meta": {"path": str(path), "class": cls, "size": tuple(image.shape[:2])},
        }
        return self._finish(sample)
