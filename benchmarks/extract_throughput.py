"""Images/s of the loop a tutorial would write vs `featx extract`, on the same real images, in one run.

    python benchmarks/extract_throughput.py [--model efficientnet_lite0] [--images 192] [--batch-size 32]

The baseline: plain PyTorch, NCHW, images decoded one by one in the main process, torch.no_grad.
featx: `featx.extract` end to end from files into a fresh HDF5 store (decode workers, channels_last,
inference_mode, content hashing and crash-safe commits included); engine auto (ONNX Runtime on a CPU
when installed). Ceiling: the fastest engine's forward pass alone, on uint8 batches already in memory,
i.e. what extraction would reach with free decoding and storage. Prints all three and the ratios.
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
from featx.backbones import get_backbone
from featx.datasets import write_elpv_folder
from featx.device import resolve_device
from featx.engines import onnx_cache_path, onnxruntime_available, select_runner
from featx.extraction import cache_dir, feature_space
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
        cache = onnx_cache_path(feature_space(backbone, source, None, "avg"), cache_dir() / "onnx")
        runner = select_runner(lambda: build_feature_network(backbone, source), device, engine, cache, pre.crop)  # exports here, outside the timing
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None, help="'random' to time a model whose weights are not here")
    parser.add_argument("--images", type=int, default=192, help="ELPV images (a multiple of 4)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEATX_CACHE"] = str(Path(tmp) / "cache")  # the ONNX graph goes there, not into ./cache
        folder = write_elpv_folder(Path(tmp) / "cells", per_class=args.images // 4)
        paths = sorted(folder.rglob("*.png"))
        n = len(paths)
        print(f"{n} ELPV images (300x300 PNG), model {args.model}, batch {args.batch_size}, "
              f"{torch.get_num_threads()} torch threads")
        baseline = tutorial_loop(paths, args.model, args.weights, args.batch_size)
        top, engine = ceiling(paths, args.model, args.weights, args.batch_size)  # also exports the graph once
        ours = featx_extract(folder, args.model, args.weights, args.batch_size, Path(tmp) / "s.h5")
    print(f"(a) tutorial loop (NCHW, no workers): {n / baseline:7.1f} images/s")
    print(f"(b) featx extract (end to end):       {n / ours:7.1f} images/s")
    print(f"(c) ceiling ({engine} forward only):{' ' * (10 - len(engine))}{n / top:7.1f} images/s")
    print(f"ratio featx / tutorial:               {baseline / ours:7.2f}x  (b/a)")
    print(f"ratio featx / ceiling:                {top / ours:7.2f}x  (b/c)")


if __name__ == "__main__":
    main()
