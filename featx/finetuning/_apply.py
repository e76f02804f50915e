"""Predict and evaluate with a fine-tuned network's own head (the safetensors files `featx finetune` writes)."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featx.backbones._weights import FINETUNED_FORMAT, FileWeights, is_safetensors, safetensors_metadata
from featx.errors import FeatxError, ParameterError

if TYPE_CHECKING:
    from featx.backbones._preprocessing import Preprocessing
    from featx.classify._results import Predictions
    from featx.finetuning._model import Trainee
    from featx.reports._report import Report

Data = str | os.PathLike | Sequence[str | os.PathLike]  # folders, files or CSV files, as featx extract reads them


def is_finetuned(path: str | os.PathLike) -> bool:
    """True for a file written by `featx finetune`."""
    return is_safetensors(path) and safetensors_metadata(path).get("format") == FINETUNED_FORMAT


@dataclass
class FineTuned:
    """A fine-tuned network file: its metadata (base model, classes, preprocessing, training history...)."""

    path: Path
    metadata: dict
    _built: tuple[Any, Trainee] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """Read once, when the file is loaded (`load_finetuned` checks it there)."""
        from featx.backbones._preprocessing import Preprocessing

        return Preprocessing.from_dict(self.metadata["preprocessing"])

    def training_stores(self) -> list[Path]:
        """None: a network reads no feature store (as `ModelBundle.training_stores`)."""
        return []

    def probabilities(self, paths: Sequence[str], *, tta: str = "none", batch_size: int = 64,
                      workers: int | None = None, device: str = "auto", progress: bool = True,
                      ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """(n_ok x n_classes probabilities, boolean mask of the paths that decoded, [(path, reason)] of the
        others). `tta="d4"`: averaged over the 8 symmetries of the square."""
        from featx.finetuning._data import decoded_batches
        from featx.names import validate_parameters

        validate_parameters(tta=tta)
        classifier, pre = self.network(device), self.preprocessing
        failures: list[tuple[str, str]] = []
        found = np.zeros(len(paths), dtype=bool)
        scores = np.zeros((len(paths), len(self.classes)), dtype=np.float32)
        for indices, _, images in decoded_batches(list(paths), pre, workers, batch_size, failures, "predict", progress):
            scores[indices] = classifier.scores(images, tta).cpu().numpy()
            found[indices] = True
        return scores[found], found, failures

    def network(self, device: str = "auto") -> Trainee:
        """The network on `device`, built from the file on first use there and kept."""
        from featx.backbones._device import resolve_device
        from featx.backbones._registry import get_backbone
        from featx.finetuning._model import Trainee

        resolved = resolve_device(device)
        if self._built is None or self._built[0] != resolved:
            model = get_backbone(self.metadata["model"]).build_model(FileWeights(self.path))
            self._built = resolved, Trainee(model, None, self.preprocessing, resolved)
        return self._built[1]

    def predict(self, data: str | os.PathLike | Sequence[str | os.PathLike], *, weights: str | os.PathLike | None = None,
                tta: str = "none", **options: Any) -> tuple[Predictions, Decoded]:
        """The head's predictions for every image in `data` (see `predict`); `weights` must be None (the
        network is the file)."""
        return predict(self, data, tta, **_no_weights(weights, options))

    def evaluate(self, data: str | os.PathLike | Sequence[str | os.PathLike], *, weights: str | os.PathLike | None = None,
                 tta: str = "none", **options: Any) -> tuple[Report, Decoded]:
        """Report of the head on labelled images (see `evaluate`)."""
        return evaluate(self, data, tta, **_no_weights(weights, options))


def _no_weights(weights: str | os.PathLike | None, options: dict) -> dict:
    if weights is not None:
        raise ParameterError(f"weights={weights!r}: a fine-tuned network is its own weights file; pass none")
    return options


@dataclass
class Decoded:
    """How many files a fine-tuned network was given and those that failed (the `Sources` of a fitted model)."""

    n: int
    failures: list[tuple[str, str]]

    def summary(self) -> str:
        return failures_summary(self.n, self.failures)


def load_finetuned(path: str | os.PathLike) -> FineTuned:
    """Read a file written by `featx finetune` (its metadata; the network is built when used)."""
    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"no model file at {path}")
    metadata = safetensors_metadata(path) if is_safetensors(path) else {}
    if metadata.get("format") != FINETUNED_FORMAT:
        raise FeatxError(f"{path} is not a fine-tuned network (written by featx finetune)")
    network = FineTuned(path, metadata)
    try:  # read and checked before any work: its sizes decide what each decode worker allocates
        network.preprocessing
        if not isinstance(metadata["model"], str) or not network.classes or not all(isinstance(c, str) for c in network.classes):
            raise ValueError("its model or classes are not names")
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatxError(f"{path} is a damaged fine-tuned network ({type(exc).__name__}: {exc})") from None
    return network


def failures_summary(n: int, failures: list[tuple[str, str]]) -> str:
    from featx.images._failures import failure_lines

    return "\n".join([f"{n} files, {len(failures)} failed", *failure_lines(failures)])


def predict(model: FineTuned, data: Data, tta: str = "none", **options: Any) -> tuple[Predictions, Decoded]:
    """The head's predictions for every image in `data` (those that failed: their reasons); returns
    (Predictions, Decoded)."""
    from featx.classify._results import Predictions
    from featx.images._inputs import find_images

    images = find_images(data)
    scores, found, failures = model.probabilities(images.paths, tta=tta, **options)
    predictions = Predictions.of(images, found, scores.argmax(1), scores, "probability", model.classes, failures)
    return predictions, Decoded(len(images), failures)


def evaluate(model: FineTuned, data: Data, tta: str = "none", **options: Any) -> tuple[Report, Decoded]:
    """Report of the head on labelled images (class folders or CSV labels); returns (Report, Decoded)."""
    from featx.classify._results import check_some_read, labels_in
    from featx.images._inputs import find_images
    from featx.reports._report import Outcomes, Report, metrics

    images = find_images(data)
    labels = labels_in(images, model.classes, data)
    labelled = labels >= 0
    paths = [p for p, ok in zip(images.paths, labelled) if ok]
    scores, found, failures = model.probabilities(paths, tta=tta, **options)
    check_some_read(found, failures)
    y, predicted = labels[labelled][found], scores.argmax(1)
    details = {"model": model.metadata["model"], "fine-tuned": str(model.path), "head": "fine-tuned",
               "tta": tta, "n_failed": len(failures)}
    outcomes = Outcomes.of([p for p, ok in zip(paths, found) if ok], y, predicted, scores, "probability")
    report = Report(model.classes, metrics(y, predicted, model.classes), details, outcomes=outcomes,
                    failures=list(failures), title=f"featx evaluate: fine-tuned {model.metadata['model']} on {len(paths):,} files")
    return report, Decoded(len(paths), list(failures))
