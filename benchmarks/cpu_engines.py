"""Images/s of featx's ONNX Runtime runner vs OpenVINO on the same exported graph and batches, in one run.

    pip install openvino && python benchmarks/cpu_engines.py [--models efficientnet_lite0,mobilenet_v3_large,resnet50]

Both run the graph featx exports for the model's feature space (uint8 in, pooled features out) on
batches of 32 already in memory, in chunks of 8 on two concurrent requests (the scheme of featx's
ONNX Runtime runner). Prints images/s of each, their ratio, and the largest difference between their
features, per model: the measurement behind adding OpenVINO as an engine (not one of featx's engines yet).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from featx.backbones._device import resolve_device
from featx.backbones._registry import DEFAULT_MODEL, get_backbone
from featx.features._engines import CHUNK, build_runner
from featx.features._space import FeatureSpace


def images_per_second(run: Callable[[torch.Tensor], object], batches: list[torch.Tensor], rounds: int = 3) -> float:
    run(batches[0])  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        best = min(best, time.perf_counter() - start)
    return sum(len(b) for b in batches) / best


def openvino_runner(graph: str, requests: int) -> Callable[[torch.Tensor], np.ndarray]:
    """OpenVINO's CPU plugin on the ONNX graph: chunks of CHUNK images on `requests` concurrent requests."""
    import openvino as ov

    compiled = ov.Core().compile_model(graph, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(requests)})
    queue = ov.AsyncInferQueue(compiled, requests)

    def run(images: torch.Tensor) -> np.ndarray:
        batch = images.numpy()
        outputs: dict[int, np.ndarray] = {}
        queue.set_callback(lambda request, i: outputs.__setitem__(i, request.get_output_tensor(0).data.copy()))
        for i in range(0, len(batch), CHUNK):
            queue.start_async({0: batch[i : i + CHUNK]}, i)
        queue.wait_all()
        return np.concatenate([outputs[i] for i in sorted(outputs)])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large,resnet50")
    parser.add_argument("--batches", type=int, default=8, help="batches of 32 random uint8 images")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEATX_CACHE"] = tmp  # exported graphs go there
        print(f"{os.cpu_count()} cores, {torch.get_num_threads()} threads; images/s")
        print(f"{'model':<20} {'onnxruntime':>12} {'openvino':>9} {'ratio':>6} {'max |diff|':>11}")
        for model in args.models.split(","):
            backbone = get_backbone(model)
            source = backbone.weights(None if model == DEFAULT_MODEL else "random")
            space = FeatureSpace.of(backbone, source)
            crop = space.crop
            batches = [torch.from_numpy(rng.integers(0, 256, (32, 3, crop, crop), dtype=np.uint8)) for _ in range(args.batches)]
            ort = build_runner(space, source, resolve_device("cpu"), "onnx")
            ov = openvino_runner(str(ort.path), ort.threads)
            diff = float(np.abs(ort(batches[0]) - ov(batches[0])).max())
            a, b = images_per_second(ort, batches), images_per_second(ov, batches)
            print(f"{model:<20} {a:12.1f} {b:9.1f} {b / a:6.2f} {diff:11.2e}", flush=True)


if __name__ == "__main__":
    main()
