"""Decode and resize images in DataLoader worker processes and run the network on their batches."""
from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .content import content_key, read_bytes, unreadable
from .decode import DecodeError, decode
from .preprocessing import Preprocessing


class ImageFiles(Dataset):
    """Item i: (i, uint8 3 x crop x crop tensor, None, False) or (i, None, reason, permanent).

    `permanent` failures come from the bytes themselves (not an image, truncated...) and are remembered
    by content key; the others (unreadable, changed on disk) are tried again on the next run.

    The bytes are hashed again as they are decoded, so a row's key is always the hash of the very bytes
    its features came from, even if a file changes during the run.
    """

    def __init__(self, paths: Sequence[str], keys: Sequence[str], preprocessing: Preprocessing) -> None:
        self.paths, self.keys = list(paths), list(keys)
        self.transform = preprocessing.geometric()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            data = read_bytes(self.paths[i])
            if content_key(data) != self.keys[i]:
                return i, None, "file changed during extraction; run again", False
            return i, self.transform(decode(data)), None, False
        except DecodeError as exc:
            return i, None, str(exc), True
        except OSError as exc:
            return i, None, unreadable(exc), False
        except Exception as exc:  # a decoder bug on one odd file must never stop the run
            return i, None, f"cannot decode: {type(exc).__name__}: {exc}", True


def collate(batch):
    """-> (indices of decoded images, N x 3 x H x W uint8 tensor or None, [(index, reason, permanent)])."""
    good = [(i, t) for i, t, _, _ in batch if t is not None]
    failed = [(i, reason, permanent) for i, t, reason, permanent in batch if t is None]
    images = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], images, failed


def default_workers() -> int:
    """Decode workers: leave one core to the network (at least one worker; at most eight)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(dataset: Dataset, batch_size: int, workers: int | None, pin_memory: bool = False) -> DataLoader:
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        worker_init_fn=functools.partial(_init_worker, os.getpid()) if workers else None,
    )


def _init_worker(parent: int, _: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the compute threads
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Forked workers share the store's lock and HDF5 file descriptors: if the extraction is killed,
    they must die at once rather than hold the lock until they notice. Linux only (PR_SET_PDEATHSIG);
    elsewhere workers are spawned and inherit no descriptors."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class FeatureBatch(NamedTuple):
    """Features of some of the files given to a compute function, by position in that list.

    `indices[n]` has `features[n]` (None when the whole batch failed); `failures`: (index, reason, permanent).
    """

    indices: list[int]
    features: np.ndarray | None
    failures: list[tuple[int, str, bool]]


def local_batches(
    paths: Sequence[str], keys: Sequence[str], runner, preprocessing: Preprocessing, batch_size: int, workers: int | None
) -> Iterator[FeatureBatch]:
    """Decode `paths` in worker processes (checking each file's bytes still hash to its key) and run `runner`."""
    loader = make_loader(ImageFiles(paths, keys, preprocessing), batch_size, workers, runner.device.type == "cuda")
    for indices, images, failures in loader:
        yield FeatureBatch(indices, runner(images) if images is not None else None, failures)
