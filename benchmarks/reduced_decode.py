"""How far reduced-size decoding moves the features, and what it saves, on camera-like photographs.

    python benchmarks/reduced_decode.py [--per-class 10] [--size 4000x3000] [--model efficientnet_lite0]

Photographs: scikit-image's real photos, cropped, upscaled with noise and saved as JPEG (benchmarks/photos.py),
one class per photograph. Each image is decoded and preprocessed three ways: at full size (featx 0.1.0);
featx's "reduced" mode (JPEG DCT scaling down to twice the resize target, then `Image.reduce` while the crop
stays 3x the output); and a more aggressive reduction (DCT scaling down to the target itself, reducing gap 2). Prints per-image decode+resize time, the cosine similarity of each way's
features with the full decode's, and the accuracy of a logistic regression trained on one way's features
and tested on another's (even images train, odd images test). A few PNGs measure `Image.reduce` alone.
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from photos import PHOTOS, write_photo_folder
from PIL import Image
from sklearn.linear_model import LogisticRegression

from featx.backbones._device import resolve_device
from featx.backbones._preprocessing import DRAFT_MARGIN, REDUCING_GAP, resize_crop
from featx.backbones._registry import get_backbone
from featx.features._engines import build_runner
from featx.features._space import FeatureSpace
from featx.images._decode import decode


def prepare(data: bytes, pre, way: tuple[int, float] | None) -> torch.Tensor:
    """Decode + resize + crop; `way`: None for a full decode, else (draft margin, reducing gap)."""
    if way is None:
        return resize_crop(decode(data), pre.resize, pre.crop, pre.interpolation)
    return resize_crop(decode(data, way[0] * pre.resize), pre.resize, pre.crop, pre.interpolation, reducing_gap=way[1])


def timed(blobs: list[bytes], pre, way: tuple[int, float] | None) -> tuple[torch.Tensor, float]:
    """(uint8 images, ms per image on one core)."""
    start = time.perf_counter()
    images = torch.stack([prepare(b, pre, way) for b in blobs])
    return images, 1000 * (time.perf_counter() - start) / len(blobs)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=10, help=f"images per photograph ({len(PHOTOS)} photographs)")
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--pngs", type=int, default=4, help="PNGs for the Image.reduce row")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)
    backbone = get_backbone(args.model)
    pre, source = backbone.preprocessing(), backbone.weights(None)
    runner = build_runner(FeatureSpace.of(backbone, source), source, resolve_device("cpu"), "auto")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photo_folder(Path(tmp), args.per_class, size)
        blobs = [p.read_bytes() for p in paths]
    labels = np.repeat(np.arange(len(PHOTOS)), args.per_class)
    print(f"{len(blobs)} JPEGs of {size[0]}x{size[1]} ({np.mean([len(b) for b in blobs]) / 1e6:.1f} MB on average), "
          f"{args.model}: resize {pre.resize}, crop {pre.crop}, {pre.interpolation}")
    ways = {"full": None, "reduced (featx)": (DRAFT_MARGIN, REDUCING_GAP), "reduced to 1x, gap 2": (1, 2.0)}
    features, costs = {}, {}
    for name, way in ways.items():
        images, costs[name] = timed(blobs, pre, way)
        features[name] = np.concatenate([runner(images[i : i + 32]) for i in range(0, len(images), 32)])
    train, test = np.arange(len(blobs)) % 2 == 0, np.arange(len(blobs)) % 2 == 1
    classifiers = {
        name: LogisticRegression(max_iter=2000).fit(f[train], labels[train]) for name, f in features.items()
    }
    reference = classifiers["full"].predict_proba(features["full"][test])
    print(f"{'decoding':<22} {'ms/image':>8} {'cos min':>8} {'cos mean':>9} {'acc full-trained':>17} "
          f"{'acc self-trained':>17} {'changed':>8} {'max dp':>7}")
    for name, f in features.items():
        c = cosines(f, features["full"])
        probabilities = classifiers["full"].predict_proba(f[test])
        cross = (probabilities.argmax(1) == labels[test]).mean()
        own = (classifiers[name].predict(features["full"][test]) == labels[test]).mean()
        changed = (probabilities.argmax(1) != reference.argmax(1)).sum()
        print(f"{name:<22} {costs[name]:8.1f} {c.min():8.5f} {c.mean():9.5f} {cross:17.3f} {own:17.3f} "
              f"{changed:8d} {np.abs(probabilities - reference).max():7.4f}")
    print("acc full-trained: trained on full-decode features, tested on this way's; acc self-trained: trained on "
          "this way's, tested on full-decode features; changed: test predictions of the full-trained classifier "
          "that differ from those on full-decode features; max dp: largest change of a class probability")
    pngs = []
    for blob in blobs[: args.pngs]:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(blob)).save(buffer, "PNG", compress_level=1)
        pngs.append(buffer.getvalue())
    full, ms_full = timed(pngs, pre, None)
    reduced, ms_reduced = timed(pngs, pre, ways["reduced (featx)"])
    c = cosines(runner(full), runner(reduced))
    print(f"PNG {size[0]}x{size[1]} ({len(pngs)} images): full {ms_full:.1f} ms, Image.reduce {ms_reduced:.1f} ms per image; "
          f"cosine min {c.min():.5f}")


if __name__ == "__main__":
    main()
