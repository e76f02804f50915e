"""Copies found by `featx audit`'s near-duplicate clusters (embedding and pHash; then with the pixel check),
docs/audit.md "Copies".

ELPV: --copies cells, each as a JPEG q85 re-encoding and a 2% crop filed under another class; found = the
copy is in its source's cluster; also counted: the pairs reported among the published (distinct) cells.
Photos: the scikit-image photographs, each re-encoded (JPEG q75), resized to 50% and cropped by 2%, 3% and 5%.
Only the near-duplicate step runs (no label check). --base-store: a store of audit_elpv's published folder
(measured: extracted by this featx, or filled in by `featx extract --rehash`).

    python benchmarks/audit_copies.py --base-store STORE [--work DIR] [--copies 50]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import featx
from featx.auditing._duplicates import near_duplicates, near_threshold
from featx.auditing._files import read_files
from featx.datasets import load_elpv
from featx.features._neighbours import nearest
from featx.features._store import FeatureStore

from audit_elpv import copies, link_folder  # noqa: E402  (benchmarks/ is the script's folder)

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "moon",
          "page", "text", "coins", "horse", "grass", "gravel", "brick", "retina", "colorwheel", "logo", "clock")


def clusters(store: Path, data, threshold: float | None = None, bits: int | None = None, pixels: bool = True) -> tuple[dict[str, int], dict]:
    """Path -> cluster number of the near-duplicate clusters of `data` in `store`, and the counts (thresholds:
    the audit's adaptive ones unless given; `pixels`: the pixel check, its CPU seconds in the counts)."""
    with FeatureStore.open(store) as opened:
        files, _ = read_files(opened, data)
    sims, index = nearest(files.features, 10)
    threshold = near_threshold(sims[:, 0]) if threshold is None else threshold
    start = time.process_time()
    table, _, counts = near_duplicates(files, sims, index, threshold, [""] * len(files.paths), bits, pixels)
    counts["seconds"] = time.process_time() - start
    return {os.path.abspath(r[1]): r[0] for r in table.rows}, counts


def photo_copies(root: Path) -> dict[str, str]:
    from skimage import data

    copied = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        source = root / f"{name}.png"
        image.save(source)
        w, h = image.size
        variants = {"q75.jpg": lambda p: image.save(p, "JPEG", quality=75), "half.png": lambda p: image.resize((w // 2, h // 2)).save(p)}
        for share in (2, 3, 5):
            box = (round(share / 200 * w), round(share / 200 * h), w - round(share / 200 * w), h - round(share / 200 * h))
            variants[f"crop{share}.png"] = lambda p, box=box: image.crop(box).save(p)
        for suffix, save in variants.items():
            save(root / f"{name}-{suffix}")
            copied[os.path.abspath(root / f"{name}-{suffix}")] = os.path.abspath(source)
    return copied


def found(copied: dict[str, str], cluster: dict[str, int]) -> dict[str, float]:
    by_kind: dict[str, list[bool]] = {}
    for copy, source in copied.items():
        kind = copy.rsplit("-", 1)[1]
        by_kind.setdefault(kind, []).append(copy in cluster and cluster[copy] == cluster.get(source))
    return {kind: float(np.mean(hits)) for kind, hits in by_kind.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-store", required=True)
    parser.add_argument("--work")
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="featx-copies-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store.h5"
    if not store.exists():
        shutil.copyfile(args.base_store, store)
    elpv, rng = load_elpv(), np.random.default_rng(args.seed)
    classes = elpv.target_names
    placement = {i: classes[t] for i, t in enumerate(elpv.target)}
    published, planted = work / "published", work / "planted"
    link_folder(published, placement, elpv.filenames)
    link_folder(planted, placement, elpv.filenames)
    copied = {}
    for i in rng.choice(len(elpv.target), args.copies, replace=False).tolist():
        source = planted / placement[i] / Path(elpv.filenames[i]).name
        for suffix, data in copies(Image.open(elpv.filenames[i])).items():
            other = classes[(elpv.target[i] + rng.integers(1, len(classes))) % len(classes)]
            path = planted / other / f"{Path(elpv.filenames[i]).stem}-{suffix}"
            path.write_bytes(data)
            copied[os.path.abspath(path)] = os.path.abspath(source)
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    photo_copied = photo_copies(photos)
    print(featx.extract([planted, photos], store=store, progress=False).summary())

    for pixels in (False, True):
        how = "with the pixel check" if pixels else "embedding + pHash"
        cluster, counts = clusters(store, published, pixels=pixels)
        print(f"{how}: published ELPV (distinct cells): {counts['embedding_pairs']} embedding pairs, {counts['hash_pairs']} pHash "
              f"pairs (threshold {counts['hash_threshold']} bits), {counts['pixel_pairs']} pixel pairs ({counts['refuted']} refuted), "
              f"{counts['clusters']} clusters of {counts['files']} cells; {counts['seconds']:.1f} s CPU")
        cluster, counts = clusters(store, planted, pixels=pixels)
        print(f"{how}: ELPV with {len(copied)} copies: copies in their source's cluster {found(copied, cluster)}; "
              f"pHash threshold {counts['hash_threshold']} bits, {counts['clusters']} clusters; {counts['seconds']:.1f} s CPU")
        # every photograph has 5 copies here, so the adaptive thresholds (medians) rise; a photo collection with
        # few copies gets 0.90 and about 2 bits (median nearest hash 23 bits): measured with those as well
        for threshold, bits in ((None, None), (0.90, 0), (0.90, 2), (0.90, 4)):
            cluster, counts = clusters(store, photos, threshold, bits, pixels)
            print(f"{how}: photos, thresholds {threshold or 'adaptive'} / {counts['hash_threshold']} bits: copies in their source's "
                  f"cluster {found(photo_copied, cluster)}; {counts['clusters']} clusters for {len(PHOTOS)} photographs")

if __name__ == "__main__":
    main()
