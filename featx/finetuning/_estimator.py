"""`FinetunedClassifier`: `featx.finetune` as a scikit-learn classifier over image files.

`fit(paths, y)` fine-tunes a backbone; `predict` and `predict_proba` run its head. The fitted network is kept
as the bytes of its safetensors file (`network_`), so the estimator clones, pickles and cross-validates like
any other, and `save_network` writes the file that `featx predict`, `featx extract --weights` and
`PretrainedFeatures(weights=...)` read.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from featx.errors import BadInputError
from featx.features._transformer import as_items
from featx.images._inputs import ImageList
from featx.names import DEFAULT_MODEL, validate_parameters

if TYPE_CHECKING:
    from featx.finetuning._apply import FineTuned
    from featx.finetuning._config import FinetuneConfig

ImagePaths = Sequence[str | os.PathLike] | np.ndarray  # or a pandas Series or one-column DataFrame of file paths


def _paths(X) -> list[str]:
    """Image file paths from a list, 1-D array, Series or one-column DataFrame (as `PretrainedFeatures` takes
    them); fine-tuning reads the files themselves, so in-memory images are refused."""
    paths = as_items(X)
    for i, item in enumerate(paths):
        if not isinstance(item, (str, os.PathLike)):
            raise ValueError(f"X[{i}] is {type(item).__name__}; FinetunedClassifier takes image file paths")
    return [os.path.abspath(p) for p in paths]


class FinetunedClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune `model` on labelled image files, then classify images with its own head.

    Parameters: `model` and `weights` (the starting point, as in `featx finetune`), `config` (a
    `featx.FinetuneConfig`, or a dict of its fields: epochs, image size, augmentation, learning rates...; default its defaults), `tta`
    ("d4": predictions averaged over the 8 symmetries of the square), `workers`, `device`, `verbose`.
    Fitted: `classes_`, `network_` (the safetensors file's bytes), `history_`, `best_epoch_`, `failures_`.
    """

    def __init__(self, model: str = DEFAULT_MODEL, weights: str | None = None, config: FinetuneConfig | None = None,
                 tta: str = "none",
                 workers: int | None = None, device: str = "auto", verbose: bool = False) -> None:
        self.model = model
        self.weights = weights
        self.config = config
        self.tta = tta
        self.workers = workers
        self.device = device
        self.verbose = verbose

    def fit(self, X: ImagePaths, y: ArrayLike) -> FinetunedClassifier:
        from featx.finetuning._train import finetune

        validate_parameters(tta=self.tta)  # before training, not at the first predict
        paths, y = _paths(X), np.asarray(y)
        if len(y) != len(paths):
            raise ValueError(f"X has {len(paths)} images but y has {len(y)} labels")
        classes = np.unique(y)
        names = [str(c).strip() for c in classes]  # the network's class names, as featx reads labels from a CSV
        if len(set(names)) < len(names) or not all(names):
            raise ValueError("class labels must stay distinct and non-empty as text without surrounding spaces, got "
                             f"{[str(c) for c in classes]}")
        index = {name: i for i, name in enumerate(sorted(names))}  # sorted as text, as find_images sorts classes
        images = ImageList(paths, np.array([index[str(label).strip()] for label in y], dtype=np.int64), sorted(names))
        with tempfile.TemporaryDirectory(prefix="featx-finetune-") as tmp:
            result = finetune(images, self.model, Path(tmp) / "network.safetensors", weights=self.weights,
                              config=self.config, workers=self.workers, device=self.device,
                              progress=self.verbose)
            network = result.path.read_bytes()
        self.classes_, self.network_ = classes, network  # learned state only once training succeeded
        self._built = None  # the network of an earlier fit
        self.columns_ = np.array([index[name] for name in names])  # head output of each class
        self.history_, self.best_epoch_, self.failures_ = result.history, result.best_epoch, result.failures
        return self

    def save_network(self, path: str | os.PathLike) -> Path:
        """Write the fine-tuned network (for featx predict/evaluate/extract --weights); returns the path."""
        check_is_fitted(self, "network_")
        from featx.outputs import atomic_write

        path = Path(path)
        with atomic_write(path) as out:
            out.write(self.network_)
        return path

    def _network(self) -> FineTuned:
        """The fitted network, built once per `device` and kept (not pickled: built again after unpickling)."""
        from featx.finetuning._apply import load_finetuned

        built = getattr(self, "_built", None)
        if built is None or built[0] != self.device:
            with tempfile.TemporaryDirectory(prefix="featx-network-") as tmp:
                network = load_finetuned(self.save_network(Path(tmp) / "network.safetensors"))
                network.network(self.device)  # built while its file exists
            self._built = built = self.device, network
        return built[1]

    def __getstate__(self) -> dict:
        return {key: value for key, value in super().__getstate__().items() if key != "_built"}

    def predict_proba(self, X: ImagePaths) -> np.ndarray:
        paths = _paths(X)
        scores, _, failures = self._network().probabilities(paths, tta=self.tta, workers=self.workers,
                                                            device=self.device, progress=self.verbose)
        if failures:
            path, reason = failures[0]
            raise BadInputError(f"{path}: {reason}" + (f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""))
        return scores[:, self.columns_]

    def predict(self, X: ImagePaths) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
