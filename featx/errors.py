"""Errors whose message is meant for the user: the CLI prints them without a traceback."""
from __future__ import annotations

import os
from collections.abc import Iterable


class FeatxError(Exception):
    """Base class of featx's user-facing errors."""


class ParameterError(FeatxError, ValueError):
    """A parameter value featx cannot use (scikit-learn convention: a ValueError)."""


class UnknownNameError(ParameterError):
    """A model, layer, pooling or similar name that featx does not know."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        import difflib

        valid = list(valid)
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)  # a typo: efficientnet-lite0
        if len(valid) <= 40:
            listed = ", ".join(valid)
        else:  # a long list (a network's 272 layers) buries the line: its first few, and the closest names
            listed = f"{', '.join(valid[:8])}, ... ({len(valid)} in all)"
        super().__init__(f"unknown {kind} {name!r}; valid names: {listed}" + (f"; closest: {', '.join(close)}" if close else ""))


class AmbiguousNameError(ParameterError):
    """A name that matches several (an ImageNet class named by a part of several names)."""


class WeightsUnavailableError(FeatxError):
    """Pretrained weights that are not here and cannot be fetched (offline, download failed, corrupt file)."""


class WeightsMismatchError(FeatxError):
    """Fine-tuned weights asked to load into another architecture than the one they were trained from."""


class StoreInUseError(FeatxError):
    """Another process is writing the feature store."""


class FeatureSpaceMismatchError(FeatxError):
    """Features of one feature space asked to mix with another."""


class Interrupted(FeatxError):
    """A run stopped by Ctrl-C after keeping what was done; the same command plus `resume_flags` goes on."""

    resume_flags: tuple[str, ...] = ()


class ExtractionInterrupted(Interrupted):
    """An extraction stopped by Ctrl-C after committing what was done."""

    def __init__(self, store: str | os.PathLike, kept: int) -> None:
        done = f"the {kept} images computed in this run are kept in {store}" if kept else "no image was computed yet"
        super().__init__(f"interrupted: {done}")
        self.store, self.kept = store, kept


class StoreWriteError(FeatxError):
    """A write to a feature store failed (disk full, I/O error); the rows committed before it are kept."""

    def __init__(self, message: str, store: str | os.PathLike, kept: int) -> None:
        super().__init__(message)
        self.store, self.kept = store, kept


class DamagedStoreError(FeatxError):
    """A feature store whose metadata or tables cannot be read as featx wrote them."""


class FinetuneInterrupted(Interrupted):
    """A fine-tuning run stopped by Ctrl-C: the checkpoint of its last finished epoch is kept."""

    resume_flags = ("--resume",)

    def __init__(self, checkpoint: str | os.PathLike) -> None:
        kept = f"the finished epochs are kept in {checkpoint}" if checkpoint.is_file() else "no epoch had finished"
        super().__init__(f"interrupted: {kept}")


class BadInputError(FeatxError, ValueError):
    """Input data that cannot be used: no images, unreadable CSV, unmatched label pattern..."""


class MissingPathError(BadInputError):
    """A file or folder given as input that does not exist."""


class MissingWeightsError(WeightsUnavailableError, MissingPathError):
    """A weights file given that does not exist (a usage error, as any missing input)."""


class FeatxWarning(UserWarning):
    """Base class of featx's warnings: the CLI shows them as one "warning: ..." line."""


class StoreWarning(FeatxWarning):
    """What a reader of a store should know: another process is writing it (its committed rows are read), or
    files of its view are no longer on disk (left out)."""


class UnsafeLoadWarning(FeatxWarning):
    """A file loaded in a way that can run code it holds, because the user asked for it (--unsafe-pickle)."""


class InputWarning(FeatxWarning):
    """An input skipped while finding images (a symlink that loops, leads nowhere or repeats a folder; a folder
    that cannot be read)."""


class OutputError(FeatxError):
    """An output file or folder that cannot be written (read-only, full, not a folder...)."""
