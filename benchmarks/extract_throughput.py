"""Images/s of the loop a tutorial would write vs `featx extract`, on the same real images, in one run.

    python benchmarks/extract_throughput.py [--models efficientnet_lite0,mobilenet_v3_large,resnet50] [--images 1024]
                                            [--photos 64] [--web 256] [--rerun-files 20000]

The baseline: plain PyTorch, NCHW, images decoded one by one in the main process, torch.no_grad.
featx: `featx.extract` end to end from files into a fresh HDF5 store (decode workers, channels_last,
inference_mode, content hashing and crash-safe commits included); engine auto (ONNX Runtime on a CPU
when installed). Ceiling: the fastest engine's forward pass alone, on uint8 batches already in memory,
i.e. what extraction would reach with free decoding and storage. Prints all three and the ratios, per model.

Then, for the default model, photographs (benchmarks/photos.py: scikit-image's photos as camera-like JPEGs):
12-megapixel and web-size (500 x 375) rows, which add featx with its old full-size decoding (`decode='full'`);
and a rerun row: a folder of `--rerun-files` hard links to the web-size images, extracted once, then rerun
with nothing new: seconds, and bytes read (rchar of /proc/self/io) against the folder's bytes.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

import featx
from featx.backbones._device import resolve_device
from featx.backbones._registry import DEFAULT_MODEL, get_backbone
from featx.datasets import write_elpv_folder
from featx.features._engines import build_runner, onnxruntime_available
from featx.features._extraction import RACY_NS
from featx.features._network import build_feature_network
from featx.features._space import FeatureSpace


def tutorial_loop(paths: list[Path], model: str, weights: str | None, batch_size: int) -> float:
    """Seconds for the textbook loop over `paths`."""
    backbone = get_backbone(model)
    pre = backbone.preprocessing()
    network = build_feature_network(backbone, backbone.weights(weights)).trunk.eval()
    transform = transforms.Compose([
        transforms.Resize(pre.resize, interpolation=transforms.InterpolationMode(pre.interpolation)),
        transforms.CenterCrop(pre.crop),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])
    start = time.perf_counter()
    features = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch_size]])
        with torch.no_grad():
            maps = network(batch)
        features.append(torch.cat([m.mean((2, 3)) for m in maps.values()], 1).numpy())
    return time.perf_counter() - start


def ceiling(paths: list[Path], model: str, weights: str | None, batch_size: int) -> tuple[float, str]:
    """(seconds, engine) of the fastest engine's forward pass alone over `paths` decoded beforehand."""
    backbone = get_backbone(model)
    pre, source = backbone.preprocessing(), backbone.weights(weights)
    transform = pre.geometric()
    batches = [
        torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch_size]])
        for i in range(0, len(paths), batch_size)
    ]
    device = resolve_device("auto")
    candidates = ["torch"] + (["onnx"] if device.type == "cpu" and onnxruntime_available() else [])
    best = (float("inf"), "")
    for engine in candidates:
        runner = build_runner(FeatureSpace.of(backbone, source), source, device, engine)  # exports here, outside the timing
        runner(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            runner(batch)
        best = min(best, (time.perf_counter() - start, engine))
    return best


def featx_extract(folder: Path, model: str, weights: str | None, batch_size: int, store: Path,
                  decode: str | None = None) -> float:
    start = time.perf_counter()
    report = featx.extract(folder, model, weights=weights, store=store, batch_size=batch_size, progress=False,
                           decode=decode)
    assert report.n_extracted == report.n_unique
    return time.perf_counter() - start


def measure(folder: Path, paths: list[Path], model: str, weights: str | None, batch_size: int, sample: int,
            tmp: Path, old: bool = False) -> dict:
    """Images/s of (a), (b) and (c) for one model: (a) and (c) are steady rates, timed on the first `sample`
    images; (b) runs on all of them, its start-up (network, store, workers) included. `old`: also (b) with
    featx 0.1.0's full-size decoding."""
    few = paths[:sample]
    baseline = tutorial_loop(few, model, weights, batch_size)
    top, engine = ceiling(few, model, weights, batch_size)  # also exports the graph, outside (b)'s timing
    ours = featx_extract(folder, model, weights, batch_size, tmp / f"{model}-{folder.name}.h5")
    rates = {"a": len(few) / baseline, "b": len(paths) / ours, "c": len(few) / top, "engine": engine}
    if old:
        rates["old"] = len(paths) / featx_extract(folder, model, weights, batch_size, tmp / f"{folder.name}-full.h5", "full")
    return rates


def bytes_read() -> int:
    """Bytes this process has read through system calls (page cache included)."""
    return int(next(line.split()[1] for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("rchar")))


def rerun(sources: list[Path], folder: Path, files: int, store: Path) -> dict:
    """A folder of `files` hard links to `sources`, extracted once, then rerun: seconds and bytes read."""
    for i in range(files):
        link = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[i % len(sources)], link)
    time.sleep(RACY_NS / 1e9 + 0.1)  # files changed within the racy window get no stat entry (when in doubt, hash)
    start, before = time.perf_counter(), bytes_read()
    first = featx.extract(folder, store=store, progress=False)
    seconds, read = time.perf_counter() - start, bytes_read() - before
    start, before = time.perf_counter(), bytes_read()
    again = featx.extract(folder, store=store, progress=False)
    assert again.n_extracted == 0 and again.n_cached == first.n_unique
    return {"first": seconds, "first_read": read, "seconds": time.perf_counter() - start,
            "read": bytes_read() - before, "folder": sum(p.stat().st_size for p in folder.rglob("*.jpg"))}


def photo_rows(args, tmp: Path) -> None:
    from photos import write_photo_folder  # benchmarks/photos.py, beside this script

    print(f"\nphotographs, {DEFAULT_MODEL}, images/s; old: featx with full-size decoding (featx 0.1.0):")
    print(f"{'images':<24} {'(a) tutorial':>12} {'(b) featx':>10} {'old':>7} {'(c) ceiling':>12} {'b/a':>6} "
          f"{'b/c':>6} {'b/old':>6}")
    web = None
    for name, count, size in (("12 MP JPEG", args.photos, (4000, 3000)), ("web JPEG 500x375", args.web, (500, 375))):
        per_class = max(1, count // 14)
        paths = write_photo_folder(tmp / name.split()[0], per_class, size)
        web = paths
        r = measure(paths[0].parent.parent, paths, DEFAULT_MODEL, None, args.batch_size, args.sample, tmp, old=True)
        print(f"{f'{name} ({len(paths)})':<24} {r['a']:12.1f} {r['b']:10.1f} {r['old']:7.1f} {r['c']:12.1f} "
              f"{r['b'] / r['a']:6.2f} {r['b'] / r['c']:6.2f} {r['b'] / r['old']:6.2f}", flush=True)
    r = rerun(web, tmp / "rerun", args.rerun_files, tmp / "rerun.h5")
    print(f"rerun of {args.rerun_files} files ({len(web)} contents, {r['folder'] / 1e9:.2f} GB): first run "
          f"{r['first']:.1f} s, {r['first_read'] / 1e9:.2f} GB read; rerun {r['seconds']:.2f} s, "
          f"{r['read'] / 1e6:.1f} MB read ({100 * r['read'] / r['folder']:.2f}% of the folder)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large,resnet50",
                        help="comma-separated; models other than the default time random weights")
    parser.add_argument("--images", type=int, default=1024, help="ELPV images for (b) (a multiple of 4)")
    parser.add_argument("--sample", type=int, default=256, help="images timed for (a) and (c)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=int, default=64, help="12-megapixel photographs (0: no photo rows)")
    parser.add_argument("--web", type=int, default=256, help="web-size photographs")
    parser.add_argument("--rerun-files", type=int, default=20000, help="files of the rerun row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEATX_CACHE"] = str(Path(tmp) / "cache")  # the ONNX graphs go there, not into ./cache
        folder = write_elpv_folder(Path(tmp) / "cells", per_class=args.images // 4)
        paths = sorted(folder.rglob("*.png"))
        print(f"{len(paths)} ELPV images (300x300 PNG; {min(args.sample, len(paths))} for (a) and (c)), "
              f"batch {args.batch_size}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; images/s:")
        print(f"{'model':<20} {'(a) tutorial':>12} {'(b) featx':>10} {'(c) ceiling':>12} {'b/a':>6} {'b/c':>6}")
        for model in filter(None, args.models.split(",")):
            weights = None if model == DEFAULT_MODEL else "random"  # same speed; only lite0's ship offline
            r = measure(folder, paths, model, weights, args.batch_size, args.sample, Path(tmp))
            print(f"{model:<20} {r['a']:12.1f} {r['b']:10.1f} {r['c']:12.1f} {r['b'] / r['a']:6.2f} "
                  f"{r['b'] / r['c']:6.2f}   (ceiling: {r['engine']})", flush=True)
        if args.photos:
            photo_rows(args, Path(tmp))


if __name__ == "__main__":
    main()
