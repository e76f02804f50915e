"""The training images of `featx.finetune`: decoded once on worker processes at the training size and kept in
memory as uint8 (streamed from disk again every epoch when they do not fit), split into a stratified training
and validation part, and augmented per batch."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from featx.backbones._preprocessing import Preprocessing
from featx.errors import BadInputError, FeatxError
from featx.features._loader import ImageFiles, make_loader
from featx.features._network import d4_views
from featx.images._content import content_keys
from featx.images._inputs import ImageList

MEMORY_FRACTION = 0.25  # decoded images are kept in memory when they take at most this share of the RAM


class TrainingImages:
    """The usable images: labels, and their uint8 pixels at training size (in memory, or decoded per batch);
    `train` and `val` index the two parts."""

    def __init__(self, paths: list[str], keys: list[str], labels: np.ndarray, classes: list[str],
                 pixels: torch.Tensor | None, preprocessing: Preprocessing, workers: int | None) -> None:
        self.paths, self.keys, self.labels, self.classes, self.pixels = paths, keys, labels, classes, pixels
        self.preprocessing, self.workers = preprocessing, workers
        self.train, self.val = np.arange(len(paths)), np.arange(0)

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

    def split(self, val_size: float, seed: int) -> None:
        """Stratified training and validation parts of the distinct contents (copies of an image fall in one part,
        so no epoch is chosen on images trained on); each holds at least as many contents as there are classes.
        Without copies this is the split of the files that featx made before."""
        everything = np.arange(len(self.labels))
        if val_size == 0:
            self.train, self.val = everything, everything[:0]
            return
        first = {key: i for i, key in reversed(list(enumerate(self.keys)))}
        contents = np.array(sorted(first.values()))  # each distinct content's first file, in file order
        labels = self.labels[contents]
        check_validation_split(np.bincount(labels, minlength=len(self.classes)), self.classes,
                               "has {} distinct usable image(s)")
        from sklearn.model_selection import train_test_split

        n_val = max(len(self.classes), round(val_size * len(contents)))
        if len(contents) - n_val < len(self.classes):
            raise BadInputError(f"val_size {val_size} leaves {len(contents) - n_val} of {len(contents)} distinct images "
                                f"to train on, fewer than the {len(self.classes)} classes: lower val_size")
        _, val = train_test_split(np.arange(len(contents)), test_size=n_val, stratify=labels, random_state=seed)
        held = np.isin(np.searchsorted(contents, [first[key] for key in self.keys]), val)  # files of those contents
        self.train, self.val = everything[~held], everything[held]

    def validated_keys(self) -> list[str]:
        """Content keys of the validation part (none of them trained on)."""
        return sorted({self.keys[i] for i in self.val})

    def data_hash(self) -> str:
        return data_hash(self.keys, self.labels, self.classes)


def check_validation_split(counts: np.ndarray, classes: Sequence[str], has: str, or_else: str = "val_size=0") -> None:
    """A one-line error when a class has fewer than 2 images (`counts`), the fewest a stratified validation split
    can divide; `has` says where ("has {} distinct usable image(s)", formatted with the count), `or_else` what else to do."""
    if counts.min() < 2:
        raise BadInputError(f"class {classes[int(counts.argmin())]!r} {has.format(counts.min())}: a validation split "
                            f"needs at least 2 per class (or {or_else})")


def data_hash(keys: Sequence[str], labels: np.ndarray, classes: Sequence[str]) -> str:
    """sha256 of training data: the sorted (content key, class name) pairs; paths do not count."""
    lines = sorted(f"{key}\t{classes[label]}" for key, label in zip(keys, labels))
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def decoded_batches(paths: Sequence[str], preprocessing: Preprocessing, workers: int | None, batch_size: int,
                    failures: list[tuple[str, str]], desc: str = "decode", progress: bool = True,
                    ) -> Iterator[tuple[list[int], list[str], torch.Tensor]]:
    """(indices into `paths`, their content keys, uint8 N x 3 x S x S) for the files that decode, on worker
    processes; each file that does not is appended to `failures` as (path, reason), as `featx extract` says it."""
    from featx.outputs import progress_bar

    good, keys = [], []
    for i, (key, error, _) in enumerate(content_keys(paths)):
        if key is None:
            failures.append((paths[i], error))
        else:
            good.append(i)
            keys.append(key)
    dataset = ImageFiles([paths[i] for i in good], keys, preprocessing)
    with progress_bar(len(good), progress, desc) as bar:
        for found, batch, failed in make_loader(dataset, batch_size, workers):
            failures += [(dataset.paths[j], reason) for j, reason, _ in failed]
            bar.update(len(found) + len(failed))
            if found:
                yield [good[j] for j in found], [keys[j] for j in found], batch


def check_labels(images: ImageList) -> None:
    """BadInputError unless every image has a label and there are at least 2 classes."""
    unlabelled = int((images.labels < 0).sum())
    if unlabelled:
        example = images.paths[int(np.argmax(images.labels < 0))]
        raise BadInputError(f"{unlabelled} images have no label (e.g. {example}); finetune needs class folders, "
                            "CSV files of path,label or --label-pattern")
    if len(images.classes) < 2:
        raise BadInputError(f"finetune needs at least 2 classes; DATA has {len(images.classes)} "
                            f"({', '.join(images.classes) or 'none'})")


def load_training_images(images: ImageList, pre: Preprocessing, workers: int | None, progress: bool,
                         log: Callable[[str], None]) -> tuple[TrainingImages, list[tuple[str, str]]]:
    """Decode every file once (checking it and hashing its bytes; failures logged and returned), keeping the
    pixels in memory when they fit; at least two classes must remain."""
    failures: list[tuple[str, str]] = []
    n, crop = len(images.paths), pre.crop
    keep = n * 3 * crop**2 <= MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    used, keys, blocks = [], [], []
    for found, found_keys, batch in decoded_batches(images.paths, pre, workers, 64, failures, progress=progress):
        used += found
        keys += found_keys
        if keep:
            blocks.append(batch)
    for path, reason in failures:
        log(f"skipped: {path}: {reason}")
    labels = images.labels[used]
    present = np.unique(labels)
    if len(present) < 2:
        only = f"only {images.classes[present[0]]!r} has some" if len(present) else "none is readable"
        raise BadInputError(f"finetune needs at least 2 classes with usable images; {only}")
    pixels = torch.cat(blocks) if keep and blocks else None
    return TrainingImages([images.paths[i] for i in used], keys, labels, list(images.classes), pixels, pre,
                          workers), failures


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
