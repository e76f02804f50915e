"""Images/s of the loop a tutorial would write vs `featx extract`, on the same real images, in one run.

    python benchmarks/extract_throughput.py [--models efficientnet_lite0,mobilenet_v3_large,resnet50] [--images 1024]

The baseline: plain PyTorch, NCHW, images decoded one by one in the main process, torch.no_grad.
featx: `featx.extract` end to end from files into a fresh HDF5 store (decode workers, channels_last,
inference_mode, content hashing and crash-safe commits included); engine auto (ONNX Runtime on a CPU
when installed). Ceiling: the fastest engine's forward pass alone, on uint8 batches already in memory,
i.e. what extraction would reach with free decoding and storage. Prints all three and the ratios, per model.
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
from featx.backbones import DEFAULT_MODEL, get_backbone
from featx.datasets import write_elpv_folder
from featx.device import resolve_device
from featx.engines import build_runner, onnxruntime_available
from featx.space import FeatureSpace
from featx.network import build_feature_network


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


def featx_extract(folder: Path, model: str, weights: str | None, batch_size: int, store: Path) -> float:
    start = time.perf_counter()
    report = featx.extract(folder, model, weights=weights, store=store, batch_size=batch_size, progress=False)
    assert report.n_extracted == report.n_unique
    return time.perf_counter() - start


def measure(folder: Path, paths: list[Path], model: str, weights: str | None, batch_size: int, sample: int,
            tmp: Path) -> dict:
    """Images/s of (a), (b) and (c) for one model: (a) and (c) are steady rates, timed on the first `sample`
    images; (b) runs on all of them, its start-up (network, store, workers) included."""
    few = paths[:sample]
    baseline = tutorial_loop(few, model, weights, batch_size)
    top, engine = ceiling(few, model, weights, batch_size)  # also exports the graph, outside (b)'s timing
    ours = featx_extract(folder, model, weights, batch_size, tmp / f"{model}.h5")
    return {"a": len(few) / baseline, "b": len(paths) / ours, "c": len(few) / top, "engine": engine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large,resnet50",
                        help="comma-separated; models other than the default time random weights")
    parser.add_argument("--images", type=int, default=1024, help="ELPV images for (b) (a multiple of 4)")
    parser.add_argument("--sample", type=int, default=256, help="images timed for (a) and (c)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEATX_CACHE"] = str(Path(tmp) / "cache")  # the ONNX graphs go there, not into ./cache
        folder = write_elpv_folder(Path(tmp) / "cells", per_class=args.images // 4)
        paths = sorted(folder.rglob("*.png"))
        print(f"{len(paths)} ELPV images (300x300 PNG; {min(args.sample, len(paths))} for (a) and (c)), "
              f"batch {args.batch_size}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; images/s:")
        print(f"{'model':<20} {'(a) tutorial':>12} {'(b) featx':>10} {'(c) ceiling':>12} {'b/a':>6} {'b/c':>6}")
        for model in args.models.split(","):
            weights = None if model == DEFAULT_MODEL else "random"  # same speed; only lite0's ship offline
            r = measure(folder, paths, model, weights, args.batch_size, args.sample, Path(tmp))
            print(f"{model:<20} {r['a']:12.1f} {r['b']:10.1f} {r['c']:12.1f} {r['b'] / r['a']:6.2f} "
                  f"{r['b'] / r['c']:6.2f}   (ceiling: {r['engine']})", flush=True)


if __name__ == "__main__":
    main()
