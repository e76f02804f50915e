"""Calibrate `featx audit`'s near-duplicate threshold: where do copies of real images fall against distinct images?

Sources: ELPV solar cells (picked at random) and scikit-image's photographs. Copies of each: JPEG
re-encoded at quality 75, 85 and 95; resized to 75% and 50%; cropped by 1%, 2% and 3% of each side's
length (centred, and from one corner); a 2% crop saved as JPEG 85. All are extracted with the default
backbone into a scratch store. Prints, per kind of copy, the cosine similarity to its source (minimum,
1st percentile, median), and for distinct images the similarity of each one to its most similar distinct
image (ELPV: among all 2,624 cells when --elpv-store holds them). Then the share of copies found and of
distinct images wrongly paired at candidate thresholds.

    python benchmarks/audit_threshold.py [--cells 80] [--elpv-store STORE] [--work DIR]
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field", "immunohistochemistry", "moon",
          "page", "rocket", "text", "clock", "grass", "gravel", "brick", "retina", "cell")
THRESHOLDS = (0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def crop(image: Image.Image, share: float, corner: bool = False) -> Image.Image:
    """Cut `share` of the width and of the height: half from each side, or all from the bottom right."""
    w, h = image.size
    dx, dy = round(w * share), round(h * share)
    left, top = (0, 0) if corner else (dx // 2, dy // 2)
    return image.crop((left, top, left + w - dx, top + h - dy))


def resize(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)


COPIES = {
    "jpeg q75": lambda im: jpeg(im, 75),
    "jpeg q85": lambda im: jpeg(im, 85),
    "jpeg q95": lambda im: jpeg(im, 95),
    "resize 75%": lambda im: resize(im, 0.75),
    "resize 50%": lambda im: resize(im, 0.5),
    "crop 1%": lambda im: crop(im, 0.01),
    "crop 2%": lambda im: crop(im, 0.02),
    "crop 3%": lambda im: crop(im, 0.03),
    "crop 3% corner": lambda im: crop(im, 0.03, corner=True),
    "crop 2% + jpeg q85": lambda im: jpeg(crop(im, 0.02), 85),
}


def sources(cells: int, seed: int) -> dict[str, Image.Image]:
    """name -> image: `cells` random ELPV cells and the scikit-image photographs."""
    from skimage import data

    from featx.datasets import load_elpv

    elpv = load_elpv()
    picked = np.random.default_rng(seed).choice(len(elpv.filenames), size=cells, replace=False)
    images = {f"elpv-{Path(elpv.filenames[i]).stem}": Image.open(elpv.filenames[i]) for i in sorted(picked)}
    for name in PHOTOS:
        pixels = getattr(data, name)()
        images[f"photo-{name}"] = Image.fromarray(pixels if pixels.dtype == np.uint8 else (pixels * 255).astype(np.uint8))
    return images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--elpv-store", help="A store holding all ELPV cells (featx extract of write_elpv_folder).")
    parser.add_argument("--work", help="Folder for the images and the scratch store (default: a temporary one).")
    args = parser.parse_args()
    import featx
    from featx.features._neighbours import nearest, unit_rows

    work = Path(args.work or tempfile.mkdtemp(prefix="featx-threshold-"))
    files: dict[tuple[str, str], Path] = {}  # (source, copy kind or "") -> file
    for name, image in sources(args.cells, args.seed).items():
        (work / name).mkdir(parents=True, exist_ok=True)
        for kind, make in {"": lambda im: im, **COPIES}.items():
            path = work / name / f"{kind.replace(' ', '_').replace('%', '').replace('+', '') or 'source'}.png"
            if not path.exists():
                make(image).save(path)  # PNG: lossless, the copy's pixels are what the transform made
            files[name, kind] = path
    store = work / "store.h5"
    print(featx.extract([str(p) for p in files.values()], store=store, progress=False).summary())
    with featx.FeatureStore.open(store) as opened:
        x = unit_rows(opened.features_for([str(p) for p in files.values()])[0])
    vector = dict(zip(files, x))
    names = sorted({name for name, _ in files})
    print(f"\n{len(names)} sources ({args.cells} ELPV cells, {len(PHOTOS)} photographs); cosine similarity of copy to source")
    print(f"{'copy':20s} {'min':>7s} {'p1':>7s} {'median':>7s}   (ELPV min / photo min)")
    copy_sims = {}
    for kind in COPIES:
        sims = np.array([vector[n, kind] @ vector[n, ""] for n in names])
        copy_sims[kind] = sims
        elpv = sims[[n.startswith("elpv") for n in names]]
        photo = sims[[n.startswith("photo") for n in names]]
        print(f"{kind:20s} {sims.min():7.4f} {np.percentile(sims, 1):7.4f} {np.median(sims):7.4f}   ({elpv.min():.4f} / {photo.min():.4f})")
    distinct = {}
    if args.elpv_store:
        cells = featx.load_features(args.elpv_store).features
        distinct["ELPV cells (all in --elpv-store)"] = nearest(cells, 1)[0][:, 0]
    else:
        cells = np.array([vector[n, ""] for n in names if n.startswith("elpv")])
        distinct["ELPV cells (the sources)"] = nearest(cells, 1)[0][:, 0]
    distinct["photographs"] = nearest(np.array([vector[n, ""] for n in names if n.startswith("photo")]), 1)[0][:, 0]
    print("\ndistinct images: similarity to the most similar other image")
    for what, sims in distinct.items():
        print(f"  {what}: n={len(sims)} max {sims.max():.4f} p99.9 {np.percentile(sims, 99.9):.4f} "
              f"p99 {np.percentile(sims, 99):.4f} median {np.median(sims):.4f}")
    domains = {"ELPV": [n.startswith("elpv") for n in names], "photo": [n.startswith("photo") for n in names]}
    print(f"\n{'threshold':>9s} " + " ".join(f"{d + ' copies found':>19s}" for d in domains)
          + f" {'worst kind (all)':>26s} " + " ".join(f"{w.split(' (')[0] + ' paired':>20s}" for w in distinct))
    for t in THRESHOLDS:
        found = {d: np.concatenate([s[mask] for s in copy_sims.values()]) >= t for d, mask in domains.items()}
        worst = min(copy_sims, key=lambda k: (copy_sims[k] >= t).mean())
        print(f"{t:9.3f} " + " ".join(f"{f.mean():19.3f}" for f in found.values())
              + f" {worst + f' {(copy_sims[worst] >= t).mean():.3f}':>26s} " + " ".join(f"{(s >= t).mean():20.4f}" for s in distinct.values()))

if __name__ == "__main__":
    main()
