"""`featx.finetune`: train a registry backbone with a new head on labelled images. One call per step: check the
configuration, build the network, load the data, resume, train (`_loop.Trainer`), write the result."""
from __future__ import annotations

import json
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from featx import __version__
from featx.backbones._device import resolve_device
from featx.backbones._preprocessing import Preprocessing
from featx.backbones._registry import Backbone, get_backbone
from featx.backbones._weights import FINETUNED_FORMAT, WeightsSource, fold_path
from featx.errors import BadInputError, FeatxError, FinetuneInterrupted, ParameterError
from featx.finetuning._config import FinetuneConfig, FinetuneResult  # pickles may name _train.FinetuneConfig
from featx.finetuning._data import (TrainingImages, check_labels, check_validation_split, data_hash,
                                   load_training_images)
from featx.finetuning._loop import Trainer, TrainState, checkpoint_path
from featx.finetuning._model import Trainee, ordinal_ranks
from featx.images._content import content_keys
from featx.images._inputs import ImageList, find_images
from featx.names import DEFAULT_MODEL
from featx.outputs import atomic_path


def finetune(
    data: str | os.PathLike | Sequence[str | os.PathLike] | ImageList,
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
    folds: int = 0,
    **options: object,
) -> FinetuneResult:
    """Fine-tune `model` on the labelled images of `data` (read as `featx extract` reads them, or a labelled
    `featx.images.ImageList`, taken as it is) into `out`.

    `config` (or its fields as keyword `options`: epochs, image_size, augment, seed, val_size, ...) says how;
    see `FinetuneConfig`. `out` is a safetensors file: the fine-tuned weights of the whole classifier and,
    under the metadata key "featx", the base model, classes, preprocessing, configuration, validation curve
    and a hash of the training data; `featx extract --weights out` and `PretrainedFeatures(weights=out)` read
    it. `resume`: continue from `out`.ckpt, the checkpoint written after every epoch. `log`: one line per
    epoch (default: standard error when `progress`). `folds` = K >= 2: then K more networks, each trained without
    one of K stratified folds of the images (`fold_path(out, k, K)`), from which `featx compare` cross-validates
    `out`'s features on every image. A file already fine-tuned on the same data and configuration is kept.
    """
    config = FinetuneConfig.of(config, **options)
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds == 1 or folds < 0:
        raise ParameterError(f"folds must be 0 (none) or an integer of at least 2, not {folds!r}")
    log = log or ((lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None))
    out = Path(out)
    backbone = get_backbone(model)
    source = backbone.weights(weights)
    images = data if isinstance(data, ImageList) else find_images(data, label_pattern)
    check_labels(images)
    if config.ordinal:
        ordinal_ranks(config.ordinal, images.classes)
    own = backbone.preprocessing_for(source)
    pre = own.at_size(config.image_size or own.crop)  # the whole image: the weights' crop would cut its edges
    parts = without_each_fold(images, folds, config.seed, config.val_size) if folds else []  # a class too small: before any training
    result = _one(images, out, backbone, source, pre, config, resume, workers, device, progress, log)
    for k, part in enumerate(parts, 1):
        log(f"fold {k} of {folds}: trained without it")
        path = fold_path(out, k, folds)
        try:
            _one(part, path, backbone, source, pre, config, resume, workers, device, progress, log, fold=(k, folds))
        except KeyboardInterrupt:  # the fold's own checkpoint, not OUT's
            raise FinetuneInterrupted(checkpoint_path(path)) from None
    return result


def without_each_fold(images: ImageList, folds: int, seed: int, val_size: float) -> list[ImageList]:
    """`images` less each of `folds` stratified folds of their distinct contents, drawn by `seed` (copies of one
    content fall in one fold; an unreadable file stays, to be skipped as usual); a one-line error when a class
    has fewer distinct images than folds, or a part keeps fewer than 2 of a class for its validation split."""
    from sklearn.model_selection import StratifiedKFold

    keys = [hashed.key for hashed in content_keys(images.paths)]
    distinct = list(dict.fromkeys(key for key in keys if key is not None))
    label = {key: images.labels[i] for i, key in enumerate(keys) if key is not None}
    labels = np.array([label[key] for key in distinct], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(images.classes))
    if counts.min() < folds:
        raise BadInputError(f"class {images.classes[int(counts.argmin())]!r} has {counts.min()} distinct readable "
                            f"image(s): fewer than the {folds} folds")
    parts = []
    for k, (kept, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(distinct, labels), 1):
        if val_size:
            check_validation_split(np.bincount(labels[kept], minlength=len(images.classes)), images.classes,
                                   f"keeps {{}} distinct image(s) without fold {k} of {folds}",
                                   "fewer folds, more images, or val_size=0")
        left_out = {distinct[i] for i in held}
        parts.append(images.take([i for i, key in enumerate(keys) if key not in left_out]))
    return parts


def _one(images: ImageList, out: Path, backbone: Backbone, source: WeightsSource, pre: Preprocessing,
         config: FinetuneConfig, resume: bool, workers: int | None, device: str, progress: bool,
         log: Callable[[str], None], fold: tuple[int, int] | None = None) -> FinetuneResult:
    """One network fine-tuned on `images` into `out`, or `out` kept when it was fine-tuned on the same data with
    the same configuration (checked before decoding, and after when some files could not be decoded)."""
    trainee = _build(backbone, source, len(images.classes), pre, device, config)  # before decoding: fails fast
    made = {"preprocessing": pre.as_dict(), "frozen_until": trainee.frozen_until}
    keys = [hashed.key for hashed in content_keys(images.paths)]
    if None not in keys and (done := _kept(out, data_hash(keys, images.labels, images.classes), backbone, source,
                                           config, made, log)):
        return done
    kept = f"layers up to {trainee.frozen_until} keep their pretrained weights" if trainee.frozen_until else "every layer learns"
    log(f"{backbone.name} at {pre.crop} px; {kept}")
    pool, failures = load_training_images(images, pre, workers, progress, log)
    pool.split(config.val_size, config.seed)
    fingerprint = {"data": pool.data_hash(), "model": backbone.name, "weights": source.id, "config": asdict(config)}
    if done := _kept(out, fingerprint["data"], backbone, source, config, made, log):
        return replace(done, failures=failures)
    trainer = Trainer(trainee, pool, config, checkpoint_path(out), log, progress)
    state = trainer.train(trainer.start(fingerprint, resume))
    _write(out, state, backbone, source, pre, config, pool, trainee.frozen_until, fold)
    checkpoint_path(out).unlink(missing_ok=True)
    return FinetuneResult(out, state.history, state.best_epoch, list(images.classes), failures)


def _kept(out: Path, data: str, backbone: Backbone, source: WeightsSource, config: FinetuneConfig, made: dict,
          log: Callable[[str], None]) -> FinetuneResult | None:
    """`out`'s result when it holds a network fine-tuned on the data of hash `data` from the same weights with the
    same configuration, preprocessing and frozen layers (`made`), exactly (a file whose configuration lacks a
    field added since is trained again); else None."""
    from featx.backbones._weights import is_safetensors, safetensors_metadata

    if not out.is_file() or not is_safetensors(out):
        return None
    try:
        recorded = safetensors_metadata(out)
    except FeatxError:
        return None
    wanted = {"data_hash": data, "model": backbone.name, "base_weights": source.id, "config": asdict(config), **made}
    if any(recorded.get(key) != value for key, value in wanted.items()):
        return None
    log(f"{out}: fine-tuned before on the same data with the same configuration: kept")
    return FinetuneResult(out, recorded["history"], recorded["best_epoch"], recorded["classes"])


def _build(backbone: Backbone, source: WeightsSource, n_classes: int, pre: Preprocessing, device: str,
           config: FinetuneConfig) -> Trainee:
    """The pretrained network with a new head of `n_classes` outputs (drawn from the seed) on the device."""
    base = backbone.build_model(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = backbone.reset_head(base, n_classes)
    return Trainee(base, head, pre, resolve_device(device), config.freeze_until, backbone.name)


def _write(out: Path, state: TrainState, backbone: Backbone, source: WeightsSource, pre: Preprocessing,
           config: FinetuneConfig, pool: TrainingImages, frozen_until: str | None,
           fold: tuple[int, int] | None = None) -> None:
    """The best epoch's weights as a safetensors file, what made them in its metadata (key "featx")."""
    from safetensors.torch import save

    metadata = {
        "format": FINETUNED_FORMAT, "model": backbone.name, "base_weights": source.id, "classes": pool.classes,
        "preprocessing": pre.as_dict(), "image_size": pre.crop, "config": asdict(config),
        "frozen_until": frozen_until, "history": state.history, "best_epoch": state.best_epoch,
        "data_hash": state.fingerprint["data"],
        "n_train": len(pool.train), "n_val": len(pool.val), "featx": __version__,
        "trained_on": sorted(set(pool.keys)),  # content keys trained or validated on: compare refuses a test part among them
        "validated_on": pool.validated_keys(),  # only picked the epoch: compare cross-validates on them
        **({"fold": list(fold)} if fold else {}),  # trained without fold k of K: compare checks it (CrossFit)
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().clone() for k, v in state.best.items()}
    data = save(tensors, metadata={"featx": json.dumps(metadata)})  # bytes written by Python: a full disk is an
    with atomic_path(out) as tmp:                                     # OSError, not safetensors' SafetensorError
        tmp.write_bytes(data)
