"""`featx.finetune`: train a registry backbone with a new head on labelled images, fastai's `fine_tune` schedule.

Images are decoded once, on worker processes, at the training size and kept in memory as uint8 (streamed
from disk again every epoch when they do not fit). Then: a head-only warm-up (body frozen, BatchNorm layers
in eval mode so their statistics stay the pretrained ones), then all layers with discriminative learning
rates (early stages lower), one-cycle or cosine, AdamW. A stratified validation part of DATA picks the best
epoch and stops the run on a plateau. After every epoch a checkpoint is written atomically; each epoch's
randomness (order, augmentation, dropout) comes from a seed of its own, so a resumed run repeats exactly
what the uninterrupted run would have done (bitwise on a CPU).

A plain loop rather than skorch: skorch's NeuralNet would need callbacks for the two-phase freeze/unfreeze
schedule, per-group learning rates set per step, per-epoch seeding and a checkpoint holding the best
weights, and its defaults (an internal 20% split, NLLLoss) would be overridden one by one; the loop below
is shorter than that configuration and keeps resume exact.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from featx import __version__
from featx.backbones._device import autocast, resolve_device
from featx.backbones._preprocessing import Preprocessing
from featx.backbones._registry import DEFAULT_MODEL, get_backbone
from featx.backbones._weights import FINETUNED_FORMAT, one_line
from featx.errors import BadInputError, FeatxError
from featx.features._loader import ImageFiles, make_loader
from featx.features._network import d4_views
from featx.images._content import content_keys
from featx.images._inputs import ImageList, find_images
from featx.outputs import atomic_path

AUGMENTS = ("d4", "flip", "none")
SCHEDULES = ("onecycle", "cosine")
CLASS_WEIGHTS = (None, "balanced")
BODY_GROUPS = 3  # the body's parameters, in network order, split in this many learning-rate groups
MEMORY_FRACTION = 0.25  # decoded images are kept in memory when they take at most this share of the RAM


@dataclass(frozen=True)
class FinetuneConfig:
    """How to train. `epochs` counts the all-layer epochs, after `freeze_epochs` head-only ones (as fastai)."""

    epochs: int = 10
    freeze_epochs: int = 1
    image_size: int | None = None  # None: the weights' own crop size
    augment: str = "d4"  # d4: the 8 rotations and mirror images; flip: horizontal mirror; none
    jitter: float = 0.1  # random zoom in by up to this fraction, at a random position (0: none)
    batch_size: int = 32
    lr: float = 2e-3  # the head's (and the warm-up's) peak learning rate
    body_lr: float = 5e-4  # the body's last group; earlier groups down to body_lr / lr_ratio
    lr_ratio: float = 10.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    class_weight: str | None = None  # "balanced": loss weights inverse to the class frequencies
    schedule: str = "onecycle"
    val_size: float = 0.15  # stratified share of DATA held out to pick the best epoch (0: none, last epoch)
    patience: int = 3  # all-layer epochs without a better validation accuracy before stopping
    seed: int = 0
    freeze_until: str | None = None  # this layer (a module name, e.g. blocks.1) and all before it never train
    ordinal: str | None = None  # the class names as ordered grades, comma-separated, low to high: soft targets

    def check(self) -> None:
        if self.augment not in AUGMENTS:
            raise BadInputError(f"unknown augmentation {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.schedule not in SCHEDULES:
            raise BadInputError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise BadInputError(f"unknown class weight {self.class_weight!r}; valid: balanced")
        if not 0 <= self.val_size < 1:
            raise BadInputError(f"val_size must be in [0, 1), got {self.val_size}")
        if self.epochs < 0 or self.freeze_epochs < 0 or self.epochs + self.freeze_epochs < 1:
            raise BadInputError("at least one epoch is needed (epochs + freeze_epochs >= 1)")
        if self.batch_size < 2:
            raise BadInputError("batch size must be at least 2 (BatchNorm trains on batches)")


@dataclass
class FinetuneResult:
    """What `finetune` did: the weights file, one history row per epoch, the epoch kept, skipped files."""

    path: Path
    history: list[dict]
    best_epoch: int
    classes: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)


# ---- data ----------------------------------------------------------------------------------------------------


class _Images:
    """The usable images: labels, and their uint8 pixels at training size (in memory, or decoded per batch)."""

    def __init__(self, paths: list[str], keys: list[str], labels: np.ndarray, pixels: torch.Tensor | None,
                 preprocessing: Preprocessing, workers: int | None) -> None:
        self.paths, self.keys, self.labels, self.pixels = paths, keys, labels, pixels
        self.preprocessing, self.workers = preprocessing, workers

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(indices, uint8 N x 3 x S x S) in the given order; streamed files are decoded on workers."""
        chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        if self.pixels is not None:
            yield from ((chunk, self.pixels[torch.from_numpy(chunk)]) for chunk in chunks)
            return
        files = ImageFiles([self.paths[i] for i in indices], [self.keys[i] for i in indices], self.preprocessing)
        for chunk, (found, images, failed) in zip(chunks, make_loader(files, batch_size, self.workers)):
            if failed:
                raise FeatxError(f"{files.paths[failed[0][0]]} changed or vanished during training: {failed[0][1]}")
            yield chunk, images


def decoded_batches(paths: Sequence[str], preprocessing: Preprocessing, workers: int | None, batch_size: int,
                    failures: list[tuple[str, str]], desc: str = "decode", progress: bool = True,
                    ) -> Iterator[tuple[list[int], list[str], torch.Tensor]]:
    """(indices into `paths`, their content keys, uint8 N x 3 x S x S) for the files that decode, on worker
    processes; each file that does not is appended to `failures` as (path, reason), as `featx extract` says it."""
    from tqdm.auto import tqdm

    good, keys = [], []
    for i, (key, error, _) in enumerate(content_keys(paths)):
        if key is None:
            failures.append((paths[i], error))
        else:
            good.append(i)
            keys.append(key)
    dataset = ImageFiles([paths[i] for i in good], keys, preprocessing)
    with tqdm(total=len(good), unit="img", desc=desc, disable=not progress or not sys.stderr.isatty(),
              file=sys.stderr) as bar:
        for found, batch, failed in make_loader(dataset, batch_size, workers):
            failures += [(dataset.paths[j], reason) for j, reason, _ in failed]
            bar.update(len(found) + len(failed))
            if found:
                yield [good[j] for j in found], [keys[j] for j in found], batch


def _decode_all(images: ImageList, preprocessing: Preprocessing, workers: int | None, progress: bool):
    """Decode every file once (checking it and hashing its bytes): usable indices, their content keys, pixels
    (None when they would not fit in memory: then batches are decoded again each epoch) and failures."""
    failures: list[tuple[str, str]] = []
    n, crop = len(images.paths), preprocessing.crop
    keep = n * 3 * crop**2 <= MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    used, keys, blocks = [], [], []
    for found, found_keys, batch in decoded_batches(images.paths, preprocessing, workers, 64, failures, progress=progress):
        used += found
        keys += found_keys
        if keep:
            blocks.append(batch)
    return used, keys, (torch.cat(blocks) if keep and blocks else None), failures


def _split(labels: np.ndarray, classes: list[str], val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) indices; the validation part gets at least one image of each class."""
    everything = np.arange(len(labels))
    if val_size == 0:
        return everything, everything[:0]
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        raise BadInputError(f"class {classes[int(counts.argmin())]!r} has {counts.min()} usable image(s): a validation "
                            "split needs at least 2 per class (or val_size=0)")
    from sklearn.model_selection import train_test_split

    n_val = max(len(classes), round(val_size * len(labels)))
    train, val = train_test_split(everything, test_size=n_val, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def data_hash(keys: Sequence[str], labels: np.ndarray, classes: list[str]) -> str:
    """sha256 of the training data: the sorted (content key, class name) pairs; paths do not count."""
    lines = sorted(f"{key}\t{classes[label]}" for key, label in zip(keys, labels))
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


# ---- augmentation and schedule -------------------------------------------------------------------------------


def augment(x: torch.Tensor, how: str, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Random views of a normalised N x C x S x S batch: d4 or flip, then a zoom in at a random position."""
    n = len(x)
    if how == "d4":
        x = x.clone()
        op = torch.randint(0, 8, (n,), generator=generator)
        for k in range(1, 8):
            chosen = op == k
            if chosen.any():
                x[chosen] = d4_views(x[chosen]).unflatten(0, (8, -1))[k]
    elif how == "flip":
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if jitter > 0:
        scale = 1.0 / (1.0 + jitter * torch.rand(n, generator=generator))  # share of the image kept
        shift = (1.0 - scale).unsqueeze(1) * (2 * torch.rand(n, 2, generator=generator) - 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


def lr_factor(schedule: str, progress: float) -> float:
    """Learning-rate multiplier at `progress` in [0, 1] of a phase: one-cycle (warm up over the first 25%
    from 1/25 of the peak, then cosine down to 1/10^4 of it, as fastai's fit_one_cycle) or plain cosine."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    pct, start, end = 0.25, 1 / 25, 1e-4
    if progress < pct:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * progress / pct))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (progress - pct) / (1 - pct)))


# ---- the model -------------------------------------------------------------------------------------------------


class Classifier:
    """A backbone's whole classifier on a device: input normalisation, class probabilities and, for training,
    its head and the parameter groups of the two phases."""

    def __init__(self, model: nn.Module, head: nn.Module | None, pre: Preprocessing, device: torch.device,
                 freeze_until: str | None = None) -> None:
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.head = head
        self.fixed = _layers_until(self.model, freeze_until) if freeze_until else []
        if head is not None and any(module is head for module in self.fixed):
            raise BadInputError(f"freeze_until {freeze_until!r} reaches the head: nothing would be fine-tuned")
        self.device = device
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        self.scale = (1.0 / (255.0 * std)).to(device)
        self.shift = (torch.tensor(pre.mean).view(1, 3, 1, 1) / std).to(device)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float() * self.scale - self.shift
        return x.contiguous(memory_format=torch.channels_last)

    def _fixed_parameters(self) -> set[int]:
        return {id(p) for module in self.fixed for p in module.parameters(recurse=False)}

    def phase(self, frozen: bool) -> None:
        """Frozen: only the head learns and BatchNorm layers keep their statistics (eval mode). Either way the
        layers up to `freeze_until` stay as they are; autograd then skips their backward pass altogether."""
        head, fixed = {id(p) for p in self.head.parameters()}, self._fixed_parameters()
        for p in self.model.parameters():
            p.requires_grad_(id(p) in head if frozen else id(p) not in fixed)
        self.model.train()
        for module in self.model.modules() if frozen else self.fixed:
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def optimizer(self, frozen: bool, config: FinetuneConfig) -> torch.optim.AdamW:
        """AdamW; the head at `lr`, the body in BODY_GROUPS groups from body_lr / lr_ratio up to body_lr."""
        head = list(self.head.parameters())
        groups = [{"params": head, "lr": config.lr, "peak": config.lr}]
        if not frozen:
            ids = {id(p) for p in head} | self._fixed_parameters()
            body = [p for p in self.model.parameters() if id(p) not in ids]
            bounds = np.linspace(0, len(body), BODY_GROUPS + 1).round().astype(int)
            for g in range(BODY_GROUPS):
                peak = config.body_lr / config.lr_ratio ** ((BODY_GROUPS - 1 - g) / max(BODY_GROUPS - 1, 1))
                groups.insert(g, {"params": body[bounds[g] : bounds[g + 1]], "lr": peak, "peak": peak})
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def scores(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities of a uint8 batch (eval mode); tta 'd4': averaged over the 8 symmetries."""
        x = self.inputs(images)
        with torch.no_grad(), autocast(self.device):
            if tta == "d4":
                return self.model(d4_views(x)).float().softmax(1).unflatten(0, (8, -1)).mean(0)
            return self.model(x).float().softmax(1)


def _layers_until(model: nn.Module, name: str) -> list[nn.Module]:
    """The modules registered up to and including `name` and its submodules (network order in timm and
    torchvision models)."""
    modules = list(model.named_modules())[1:]
    inside = [i for i, (module_name, _) in enumerate(modules) if module_name == name or module_name.startswith(name + ".")]
    if not inside:
        tops = ", ".join(module_name for module_name, _ in model.named_children())
        raise BadInputError(f"freeze_until {name!r} is not a layer of the model; its top-level layers: {tops}")
    return [module for _, module in modules[: inside[-1] + 1]]


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ---- checkpoints and the result file ----------------------------------------------------------------------------


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _read_checkpoint(ckpt: Path) -> dict:
    """A checkpoint written by `finetune`, read without unpickling code (torch's weights_only loader)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a pickle holding other than tensors and plain values
        raise FeatxError(f"{ckpt} is not a readable checkpoint ({one_line(exc)}): delete it, or run without "
                         "--resume to start again") from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise FeatxError(f"{ckpt} is not a featx finetune checkpoint: delete it, or run without --resume")
    return state


def _save_result(out: Path, state: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous().clone() for k, v in state.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, tmp, metadata={"featx": json.dumps(metadata)})


# ---- the loop --------------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63)


def _epoch_order(train: np.ndarray, config: FinetuneConfig, epoch: int, generator: torch.Generator | None = None):
    """The training part shuffled for `epoch`; a last batch of one image is left out (BatchNorm cannot train on it)."""
    generator = generator or torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    order = train[torch.randperm(len(train), generator=generator).numpy()]
    return order[:-1] if len(order) % config.batch_size == 1 else order


def _run_epoch(trainee: Classifier, data: _Images, train: np.ndarray, config: FinetuneConfig, optimizer,
               loss_fn, epoch: int, steps: tuple[int, int], progress: bool) -> tuple[float, float]:
    """One pass over the training part; returns (mean loss, images per second)."""
    generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout, drop path
    order = _epoch_order(train, config, epoch, generator)
    step, total = steps
    scaler = torch.amp.GradScaler(enabled=trainee.device.type == "cuda" and not torch.cuda.is_bf16_supported())
    losses, seen, start = [], 0, time.perf_counter()
    from tqdm.auto import tqdm

    with tqdm(total=len(order), unit="img", desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr,
              disable=not progress or not sys.stderr.isatty()) as bar:
        for chunk, images in data.batches(order, config.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = group["peak"] * lr_factor(config.schedule, step / max(total, 1))
            x = augment(trainee.inputs(images), config.augment, config.jitter, generator)
            y = torch.from_numpy(data.labels[chunk]).to(trainee.device)
            with autocast(trainee.device):
                loss = loss_fn(trainee.model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.detach().item() * len(chunk))
            seen += len(chunk)
            step += 1
            bar.update(len(chunk))
            bar.set_postfix(loss=f"{sum(losses) / seen:.3f}")
    return sum(losses) / max(seen, 1), seen / (time.perf_counter() - start)


def _validate(trainee: Classifier, data: _Images, val: np.ndarray, loss_fn, batch_size: int) -> tuple[float, float]:
    """(loss, accuracy) on the validation part, without augmentation."""
    trainee.model.eval()
    losses, correct = 0.0, 0
    for chunk, images in data.batches(val, batch_size * 2):
        probabilities = trainee.scores(images)
        y = torch.from_numpy(data.labels[chunk]).to(trainee.device)
        losses += float(F.nll_loss(probabilities.clamp_min(1e-12).log(), y, weight=loss_fn.weight, reduction="sum"))
        correct += int((probabilities.argmax(1) == y).sum())
    return losses / len(val), correct / len(val)


def _check_labels(images: ImageList) -> None:
    unlabelled = int((images.labels < 0).sum())
    if unlabelled:
        example = images.paths[int(np.argmax(images.labels < 0))]
        raise BadInputError(f"{unlabelled} images have no label (e.g. {example}); finetune needs class folders, "
                            "CSV files of path,label or --label-pattern")
    if len(images.classes) < 2:
        raise BadInputError(f"finetune needs at least 2 classes; DATA has {len(images.classes)} "
                            f"({', '.join(images.classes) or 'none'})")


def _training_images(images: ImageList, pre: Preprocessing, workers: int | None, progress: bool,
                     log: Callable[[str], None]) -> tuple[_Images, list[tuple[str, str]]]:
    """The decodable images (failures logged and returned); at least two classes must remain."""
    used, keys, pixels, failures = _decode_all(images, pre, workers, progress)
    for path, reason in failures:
        log(f"skipped: {path}: {reason}")
    labels = images.labels[used]
    present = np.unique(labels)
    if len(present) < 2:
        only = f"only {images.classes[present[0]]!r} has some" if len(present) else "none is readable"
        raise BadInputError(f"finetune needs at least 2 classes with usable images; {only}")
    return _Images([images.paths[i] for i in used], keys, labels, pixels, pre, workers), failures


class Loss(nn.Module):
    """Cross-entropy with optional label smoothing and class weights, against the labels or, for ordered
    grades, against soft ordinal targets: row y of `targets`, SORD's softmax(-(rank k - rank y)^2) over the
    classes k (Diaz & Marathe, CVPR 2019), so a near miss costs less than a far one. Written here because it
    is one line over torch's cross-entropy, which takes such probability targets."""

    def __init__(self, weight: torch.Tensor | None, smoothing: float, targets: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("targets", targets)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y if self.targets is None else self.targets[y]
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.smoothing)


def ordinal_ranks(ordinal: str, classes: Sequence[str]) -> np.ndarray:
    """Each class's grade in `ordinal` (class names, comma-separated, low to high), which must name all of them."""
    order = [name.strip() for name in ordinal.split(",")]
    if sorted(order) != sorted(classes):
        raise BadInputError(f"ordinal must name each class of DATA once, in order; DATA has {', '.join(classes)}, "
                            f"ordinal has {', '.join(order)}")
    return np.array([order.index(name) for name in classes])


def _loss(config: FinetuneConfig, train_labels: np.ndarray, classes: Sequence[str]) -> Loss:
    """The training loss; class weights for "balanced": n / (k * count of the class)."""
    n_classes, weight, targets = len(classes), None, None
    if config.class_weight == "balanced":
        counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
        weight = torch.tensor(len(train_labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    if config.ordinal:
        rank = torch.tensor(ordinal_ranks(config.ordinal, classes), dtype=torch.float32)
        targets = (-(rank[None, :] - rank[:, None]) ** 2).softmax(1)
    return Loss(weight, config.label_smoothing, targets)


def finetune(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    model: str = DEFAULT_MODEL,
    out: str | os.PathLike = "featx-finetuned.safetensors",
    *,
    weights: str | os.PathLike | None = None,
    config: FinetuneConfig | None = None,
    resume: bool = False,
    label_pattern: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options,
) -> FinetuneResult:
    """Fine-tune `model` on the labelled images of `data` (read as `featx extract` reads them) into `out`.

    `config` (or its fields as keyword `options`: epochs, image_size, augment, seed, val_size, ...) says how;
    see `FinetuneConfig`. `out` is a safetensors file: the fine-tuned weights of the whole classifier and,
    under the metadata key "featx", the base model, classes, preprocessing, configuration, validation curve
    and a hash of the training data; `featx extract --weights out` and `PretrainedFeatures(weights=out)` read
    it. `resume`: continue from `out`.ckpt, the checkpoint written after every epoch. `log`: one line per
    epoch (default: standard error when `progress`).
    """
    config = config or FinetuneConfig()
    if options:
        unknown = set(options) - set(FinetuneConfig.__dataclass_fields__)
        if unknown:
            raise BadInputError(f"unknown finetune option(s): {', '.join(sorted(unknown))}")
        config = FinetuneConfig(**{**asdict(config), **options})
    config.check()
    log = log or ((lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None))
    out = Path(out)
    backbone = get_backbone(model)
    source = backbone.weights(weights)
    images = find_images(data, label_pattern)
    _check_labels(images)
    if config.ordinal:
        ordinal_ranks(config.ordinal, images.classes)
    pre = backbone.preprocessing().at_size(config.image_size)
    target = resolve_device(device)
    base = backbone.build_model(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = backbone.reset_head(base, len(images.classes))
    trainee = Classifier(base, head, pre, target, config.freeze_until)  # before decoding: a bad layer name fails fast
    pool, failures = _training_images(images, pre, workers, progress, log)
    train, val = _split(pool.labels, images.classes, config.val_size, config.seed)
    keys, labels = pool.keys, pool.labels
    fingerprint = {"data": data_hash(keys, labels, images.classes), "model": backbone.name,
                   "weights": source.id, "config": asdict(config)}
    loss_fn = _loss(config, labels[train], images.classes).to(target)

    total_epochs = config.freeze_epochs + config.epochs
    steps_per_epoch = math.ceil(len(_epoch_order(train, config, 0)) / config.batch_size)
    state = {"epoch": 0, "history": [], "best": None, "best_epoch": -1, "best_key": None, "optimizer": None}
    ckpt = checkpoint_path(out)
    if resume and ckpt.is_file():
        state = _read_checkpoint(ckpt)
        if state["fingerprint"] != fingerprint:
            raise FeatxError(f"{ckpt} is a checkpoint of another run (data, model or settings differ); "
                             "run without --resume to start again")
        trainee.model.load_state_dict(state["model"])
        log(f"resuming after epoch {state['epoch']} of {total_epochs} ({ckpt})")
    elif resume:
        log(f"no checkpoint at {ckpt}: starting from the first epoch")

    optimizer, optimizer_frozen = None, None
    started, first = time.perf_counter(), state["epoch"]
    for epoch in range(state["epoch"], state.get("stop_after", total_epochs)):
        frozen = epoch < config.freeze_epochs
        if optimizer is None or optimizer_frozen != frozen:
            optimizer, optimizer_frozen = trainee.optimizer(frozen, config), frozen
            if state["optimizer"] is not None and state.get("optimizer_frozen") == frozen:
                optimizer.load_state_dict(state["optimizer"])
        trainee.phase(frozen)
        phase_start = 0 if frozen else config.freeze_epochs
        phase_steps = steps_per_epoch * (config.freeze_epochs if frozen else config.epochs)
        epoch_start = time.perf_counter()
        loss, rate = _run_epoch(trainee, pool, train, config, optimizer, loss_fn, epoch,
                                ((epoch - phase_start) * steps_per_epoch, phase_steps), progress)
        row = {"epoch": epoch + 1, "phase": "head" if frozen else "all", "train_loss": loss, "images_per_s": rate}
        if len(val):
            row["val_loss"], row["val_accuracy"] = _validate(trainee, pool, val, loss_fn, config.batch_size)
            key = [row["val_accuracy"], -row["val_loss"]]
        else:
            key = [epoch]
        row["seconds"] = time.perf_counter() - epoch_start
        state["history"].append(row)
        if state["best_key"] is None or key > state["best_key"]:
            state.update(best=state_copy(trainee.model), best_epoch=epoch + 1, best_key=key)
        done = epoch + 1
        stale = done - state["best_epoch"]
        stop = len(val) and not frozen and stale >= config.patience and done < total_epochs
        left = (time.perf_counter() - started) / (done - first) * (total_epochs - done)
        log(f"epoch {done}/{total_epochs} ({row['phase']}): loss {loss:.4f}"
            + (f", val loss {row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.4f}" if len(val) else "")
            + f", {rate:.1f} images/s, {row['seconds']:.0f} s"
            + (f", about {left / 60:.1f} min left" if done < total_epochs and not stop else ""))
        state.update(epoch=done, model=state_copy(trainee.model), optimizer=optimizer.state_dict(),
                     optimizer_frozen=frozen, fingerprint=fingerprint, **({"stop_after": done} if stop else {}))
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
        if stop:
            log(f"no better validation accuracy for {stale} epochs: stopping; keeping epoch {state['best_epoch']}")
            break

    metadata = {
        "format": FINETUNED_FORMAT, "model": backbone.name, "base_weights": source.id, "classes": images.classes,
        "preprocessing": pre.as_dict(), "image_size": pre.crop, "config": asdict(config),
        "history": state["history"], "best_epoch": state["best_epoch"], "data_hash": fingerprint["data"],
        "n_train": len(train), "n_val": len(val), "featx": __version__,
        "trained_on": sorted(set(keys)),  # content keys of the images trained or validated on: compare refuses a test part among them
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_result(out, state["best"], metadata)
    ckpt.unlink(missing_ok=True)
    return FinetuneResult(out, state["history"], state["best_epoch"], list(images.classes), failures)
