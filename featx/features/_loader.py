"""Decode and resize images in DataLoader worker processes and run the network on their batches."""
from __future__ import annotations

import collections
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featx.backbones._preprocessing import Preprocessing
from featx.images._content import content_key, read_bytes, unreadable
from featx.images._quality import measure, stored_size
from featx.images._decode import DecodeError

if TYPE_CHECKING:
    from featx.features._engines import Runner

_T = TypeVar("_T")
# a decoded item: (index, uint8 3 x crop x crop tensor, None, False) or (index, None, reason, permanent); measured
# files (`ImageFiles(measure=True)`) add a fifth element, the decoded image's (pHash, statistics) or None
Item = tuple


class ImageFiles(Dataset):
    """Item i: (i, uint8 3 x crop x crop tensor, None, False) or (i, None, reason, permanent).

    `permanent` failures come from the bytes themselves (not an image, truncated...) and are remembered
    by content key; the others (unreadable, changed on disk) are tried again on the next run.

    The bytes are hashed again as they are decoded, so a row's key is always the hash of the very bytes
    its features came from, even if a file changes during the run.
    """

    def __init__(self, paths: Sequence[str], keys: Sequence[str], preprocessing: Preprocessing, measure: bool = False) -> None:
        self.paths, self.keys = list(paths), list(keys)
        self.preprocessing = preprocessing
        self.measure = measure  # items get a fifth element: the decoded image's (pHash, statistics), see _quality

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        try:
            data = read_bytes(self.paths[i])
            if content_key(data) != self.keys[i]:
                return i, None, "file changed during extraction; run again", False
            if not self.measure:
                return i, self.preprocessing.load(data), None, False
            image = self.preprocessing.decoded(data)
            return i, self.preprocessing.geometric()(image), None, False, measure(image, stored_size(data))
        except DecodeError as exc:
            return i, None, str(exc), True
        except OSError as exc:
            return i, None, unreadable(exc), False
        except Exception as exc:  # a decoder bug on one odd file must never stop the run
            # memory running out is this run's, not the file's: not kept
            return i, None, f"cannot decode: {type(exc).__name__}: {exc}", not out_of_memory(exc)


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is memory running out: PIL's MemoryError, torch's CPU allocator ("can't allocate memory"),
    CUDA ("out of memory")."""
    return isinstance(exc, MemoryError) or "allocate" in str(exc) or "out of memory" in str(exc)


def worker_died(exc: BaseException) -> bool:
    """Whether `exc` is torch's word that a decode worker process died ("DataLoader worker (pid 3) is killed by
    signal: Killed.", "... exited unexpectedly"): the system's out-of-memory killer, most often."""
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


class ImageArrays(Dataset):
    """In-memory RGB PIL images with the same items as `ImageFiles` (their keys are their pixels' hash)."""

    def __init__(self, images: Sequence, preprocessing: Preprocessing) -> None:
        self.images = list(images)
        self.transform = preprocessing.geometric()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Item:
        try:
            return i, self.transform(self.images[i]), None, False
        except Exception as exc:  # one odd image must not stop the others
            return i, None, f"cannot resize: {type(exc).__name__}: {exc}", True


def collate(batch: list[tuple]) -> tuple:
    """-> (indices of decoded images, N x 3 x H x W uint8 tensor or None, [(index, reason, permanent)]),
    and when the items were measured (`ImageFiles(measure=True)`) a fourth: the decoded images' measures."""
    good = [(item[0], item[1]) for item in batch if item[1] is not None]
    failed = [(i, reason, permanent) for i, t, reason, permanent, *_ in batch if t is None]
    images = torch.stack([t for _, t in good]) if good else None
    measured = [item[4] for item in batch if item[1] is not None and len(item) > 4]
    return ([i for i, _ in good], images, failed) + ((measured,) if measured else ())


def default_workers(gpu: bool) -> int:
    """Decode worker processes, sized to the machine.

    For a GPU, all cores but one decode (at most 16): the GPU outpaces Pillow on any core count. On a CPU,
    decoding costs 10-40% of the network's compute for the registry's models, so a quarter of the cores
    decode (at least one) while the compute threads use all of them; the OS shares the cores between them
    (measured on 2 cores in docs/performance.md: 1 worker + 2 compute threads beats 0 workers or 1 thread).
    """
    cores = os.cpu_count() or 2
    return max(1, min(16, cores - 1)) if gpu else max(1, cores // 4)


def make_loader(dataset: Dataset, batch_size: int, workers: int | None, gpu: bool = False) -> DataLoader:
    workers = default_workers(gpu) if workers is None else workers
    workers = min(workers, -(-len(dataset) // batch_size))  # a worker per batch at most: --workers 500 for 20 images took 44 s
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=gpu,
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
    measured: list | None = None  # (pHash, statistics) per index, when measured (see featx.images._quality)


PASS_SECONDS = 2.0  # a forward pass runs about this long at most; its rows are committed as it ends
FIRST_PASS = 4  # images in the first pass, before any compute time is measured


class Pace:
    """How many images each forward pass runs, so that rows reach the store every few seconds of compute
    whatever the batch size (on a CPU, with --tta d4, a batch of 64 takes tens of seconds).

    The first pass runs FIRST_PASS images; then each runs as many as take PASS_SECONDS at the compute time
    per image measured so far, at most the batch size (on a GPU: the batch). The loader still decodes whole
    batches; a batch is split into passes only where one would take longer.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.size = min(batch_size, FIRST_PASS)
        self.seconds, self.images = 0.0, 0

    def passes(
        self, indices: list[int], images: torch.Tensor | None, failures: list, measured: list | None = None
    ) -> Iterator[tuple[list[int], torch.Tensor | None, list, list | None]]:
        """A decoded batch as passes of at most `size` images (read as each is taken); failures go with the first."""
        start = 0
        while True:
            end = start + self.size
            yield (indices[start:end], images[start:end] if images is not None else None, [] if start else failures,
                   measured[start:end] if measured else None)
            if end >= len(indices):
                return
            start = end

    def timed(self, call: Callable[[], _T], n: int = 0) -> _T:
        """`call()`, its duration counted as compute time (with `n` more images computed), and the next pass
        size set from the time per image so far."""
        began = time.perf_counter()
        result = call()
        self.seconds += time.perf_counter() - began
        self.images += n
        if self.images and self.seconds > 0:
            self.size = max(1, min(self.batch_size, int(PASS_SECONDS * self.images / self.seconds)))
        return result


def local_batches(dataset: Dataset, runner: Runner, batch_size: int, workers: int | None) -> Iterator[FeatureBatch]:
    """Decode the items of `dataset` (`ImageFiles` or `ImageArrays`) in worker processes and run `runner`
    in passes sized by `Pace`, each yielded as it ends.

    A pass is yielded as soon as it is done (PyTorch computes in `submit`); an asynchronous runner (ONNX
    Runtime) has two in flight, so its threads start on the next pass while the last finishes. The time
    measured is the time spent waiting on the runner (`submit`, then `result`).
    """
    loader = make_loader(dataset, batch_size, workers, runner.device.type == "cuda")
    pace = Pace(batch_size)
    in_flight: collections.deque = collections.deque()
    for batch in loader:
        for indices, images, failures, measured in pace.passes(*batch):
            started = pace.timed(lambda: runner.submit(images), len(indices)) if images is not None else None
            in_flight.append((indices, started, failures, measured))
            while in_flight and (len(in_flight) > 1 or in_flight[0][1] is None or in_flight[0][1].done()):
                yield _finish(pace, *in_flight.popleft())
    while in_flight:
        yield _finish(pace, *in_flight.popleft())


def _finish(pace: Pace, indices: list[int], features, failures: list, measured: list | None) -> FeatureBatch:
    result = pace.timed(features.result) if features is not None else None
    return FeatureBatch(indices, result, failures, measured)
