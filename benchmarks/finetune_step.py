"""Fine-tuning steps per second with early layers frozen (`featx finetune --freeze-until LAYER`) against all layers
trained, in the same run, on real ELPV cells.

    python benchmarks/finetune_step.py [--sizes 160,224] [--layers blocks.0,blocks.1,blocks.2] [--steps 4]

Each row times all-layer training steps of featx's own loop pieces (normalise, d4 + zoom augmentation,
forward, cross-entropy, backward, AdamW) on one batch of 32 cells at S px, after a warm-up step; the median
step is kept. Prints images per second and the ratio to "all layers" at the same size.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from featx.backbones._preprocessing import Preprocessing
from featx.backbones._registry import DEFAULT_MODEL, get_backbone
from featx.datasets import load_elpv
from featx.finetuning._train import Classifier, FinetuneConfig, _loss, augment


def images_per_second(images: torch.Tensor, labels: np.ndarray, pre: Preprocessing, freeze_until: str | None,
                      steps: int) -> float:
    backbone = get_backbone(DEFAULT_MODEL)
    model = backbone.build_model(backbone.weights(None))
    head = backbone.reset_head(model, int(labels.max()) + 1)
    config = FinetuneConfig(freeze_until=freeze_until)
    trainee = Classifier(model, head, pre, torch.device("cpu"), freeze_until)
    trainee.phase(frozen=False)
    optimizer, loss_fn = trainee.optimizer(False, config), _loss(config, labels, [str(k) for k in range(4)])
    generator, y = torch.Generator().manual_seed(0), torch.from_numpy(labels)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        x = augment(trainee.inputs(images), config.augment, config.jitter, generator)
        loss = loss_fn(trainee.model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="160,224")
    parser.add_argument("--layers", default="blocks.0,blocks.1,blocks.2", help="--freeze-until values to time.")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    data = load_elpv()
    picked = np.random.default_rng(0).choice(len(data.target), 32, replace=False)
    print(f"{'size':>4}  {'freeze until':<12} {'images/s':>8}  ratio")
    for size in map(int, args.sizes.split(",")):
        pre = get_backbone(DEFAULT_MODEL).preprocessing().at_size(size)
        images = torch.stack([pre.load(open(path, "rb").read()) for path in data.filenames[picked]])
        base = images_per_second(images, data.target[picked], pre, None, args.steps)
        print(f"{size:>4}  {'all layers':<12} {base:8.1f}  1.00", flush=True)
        for layer in args.layers.split(","):
            rate = images_per_second(images, data.target[picked], pre, layer, args.steps)
            print(f"{size:>4}  {layer:<12} {rate:8.1f}  {rate / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
