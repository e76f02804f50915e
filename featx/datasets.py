"""Ready-made image sets: any labelled folder, and the ELPV solar-cell benchmark shipped on PyPI."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from featx.errors import FeatxError
from featx.images._inputs import find_images
from featx.outputs import atomic_path

# ELPV labels are defect probabilities (0, 1/3, 2/3, 1) given by experts.
ELPV_CLASSES = ("functional", "possibly_defective", "likely_defective", "defective")
# 4-class test accuracy (%) in Deitsch et al., Solar Energy 185 (2019), 75/25 split.
ELPV_PAPER = {"SVM on hand-crafted features": 82.44, "VGG-19 fine-tuned": 88.42}


def load_folder(path: str | os.PathLike, label_pattern: str | None = None) -> Bunch:
    """Image paths, labels and class names of a folder, in the style of sklearn's `load_files`.

    Returns a Bunch with `filenames` (paths), `target` (label indices, -1 for none) and `target_names`.
    """
    images = find_images(path, label_pattern)
    return Bunch(filenames=np.array(images.paths, dtype=object), target=images.labels, target_names=list(images.classes))


def _elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise FeatxError('the ELPV data set is an optional extra: pip install "featx[elpv]"') from None
    return Path(elpv_dataset.__file__).parent / "data"


def load_elpv() -> Bunch:
    """ELPV: 2,624 300x300 grayscale electroluminescence images of solar cells (Deitsch et al. 2019).

    Returns a Bunch with `filenames` (PNG paths inside the installed package), `target` (0-3: defect
    probability 0, 1/3, 2/3, 1), `target_names`, `probability` and `cell_type` ("mono" or "poly").
    """
    root = _elpv_root()
    rows = [line.split() for line in (root / "labels.csv").read_text().splitlines() if line.strip()]
    probability = np.array([float(r[1]) for r in rows])
    return Bunch(
        filenames=np.array([str(root / r[0]) for r in rows], dtype=object),
        target=np.rint(probability * 3).astype(np.int64),
        target_names=list(ELPV_CLASSES),
        probability=probability,
        cell_type=np.array([r[2] for r in rows], dtype=object),
    )


def write_elpv_folder(destination: str | os.PathLike, per_class: int | None = None, seed: int = 0,
                      prune: bool = False) -> Path:
    """Copy ELPV images into destination/<class>/ (the layout `featx extract` reads); returns destination.

    `per_class` picks that many images of each class at random (all images when None). A folder holding ELPV
    images of another selection (files named as ELPV cells in the class folders that are not selected now)
    is refused, as it would give more images than asked (the demo's folder holds all 2,624); `prune` removes
    them instead, so the folder holds exactly this selection. Other files are left alone.
    """
    data, destination = load_elpv(), Path(destination)
    rng = np.random.default_rng(seed)
    cells = {Path(f).name for f in data.filenames}
    selection = {}
    for label, name in enumerate(data.target_names):
        members = np.flatnonzero(data.target == label)
        if per_class is not None:
            members = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        selection[name] = [Path(data.filenames[i]) for i in members]
    stale = [path for name, chosen in selection.items() if (destination / name).is_dir()
             for path in (destination / name).iterdir() if path.name in cells - {p.name for p in chosen}]
    if stale and not prune:
        raise FeatxError(f"{destination} already holds {len(stale)} ELPV cells of another selection "
                         f"(e.g. {stale[0]}): choose a new folder, or pass prune=True to remove them")
    for path in stale:
        path.unlink()
    for name, chosen in selection.items():
        (destination / name).mkdir(parents=True, exist_ok=True)
        for source in chosen:
            target = destination / name / source.name
            if not target.exists():  # through a temporary file: a killed copy is not taken for a whole one
                with atomic_path(target, sync=False) as tmp:  # an fsync per cell: 8.4 -> 24.3 s for 2,624
                    shutil.copyfile(source, tmp)
    return destination
