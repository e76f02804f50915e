"""Inference: a saved model bundle on new images, predicting their classes or evaluating it on labelled ones.

Images are extracted (through the cache) in the bundle's own feature space, never into its training store.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from .bundle import ModelBundle
from .classifiers import class_scores
from .errors import BadInputError
from .figures import map_rows
from .report import Outcomes, Report, metrics, predictions_page
from .store import FeatureStore


@dataclass
class Predictions:
    """Predicted classes of image files, with per-class probabilities or decision scores."""

    paths: list[str]
    predicted: list[str]
    scores: np.ndarray
    score_kind: str  # "probability" or "score"
    classes: list[str]

    def write_csv(self, out: TextIO) -> None:
        writer = csv.writer(out)
        writer.writerow(["path", "predicted", *(f"{self.score_kind}:{c}" for c in self.classes)])
        for path, name, row in zip(self.paths, self.predicted, self.scores):
            writer.writerow([path, name, *(f"{v:.6g}" for v in row)])

    def write_html(self, path: str | os.PathLike, failures: Sequence[tuple[str, str]] = ()) -> Path:
        """A self-contained HTML gallery of the predictions, least confident first, and the unreadable files."""
        from .html_report import write

        index = {name: i for i, name in enumerate(self.classes)}
        predicted = np.array([index[name] for name in self.predicted], dtype=np.int64)
        outcomes = Outcomes.of(self.paths, np.full(len(predicted), -1), predicted, self.scores, self.score_kind)
        title = f"featx predict: {len(self.paths):,} images"
        return write(path, predictions_page(outcomes, self.classes, list(failures), Path(path).parent, title))


def _bundle_features(bundle: ModelBundle, data, weights, device: str = "auto", **options):
    """Extract `data` (through the cache) in the bundle's own feature space; features of the files that worked.

    Unless `store` is given, features go to a store of their own under cache/apply/, never into the store a
    model was trained on: images predicted or evaluated must not join the next `featx fit`'s training data.
    """
    from .extraction import extract_files
    from .inputs import find_images
    from .space import cache_dir

    images = find_images(data)
    if options.get("store") is None:
        options["store"] = cache_dir() / "apply" / bundle.space.store_path(bundle.dtype).name
    done = extract_files(images, bundle.extractor(weights, device), dtype=bundle.dtype, **options)
    with FeatureStore.open(done.store) as opened:
        bundle.check_space(opened.space, opened.dtype)
        features, found = opened.features_for(images.paths)
    return images, features.astype(np.float32, copy=False), found, done


def evaluate(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights=None, **options):
    """Report of the bundle on labelled images (class folders or CSV labels); returns (Report, ExtractReport).

    `options` go to `featx.extract` (device, batch_size, workers, progress).
    """
    images, features, found, done = _bundle_features(bundle, data, weights, **options)
    unknown = sorted(set(images.classes) - set(bundle.classes))
    if unknown:
        raise BadInputError(f"classes the model does not know: {', '.join(unknown)} (it knows {', '.join(bundle.classes)})")
    index = np.array([bundle.classes.index(c) for c in images.classes] + [-1], dtype=np.int64)
    labels = index[images.labels]  # label -1 picks the trailing -1
    use = found & (labels >= 0)
    if not use.any():
        raise BadInputError("no labelled image could be evaluated (evaluate needs class folders or CSV labels; "
                            "featx predict handles unlabelled images)")
    x, true = features[use], labels[use]
    predicted = bundle.pipeline.predict(x)
    details = {"classifier": bundle.info.get("classifier"), "hyperparameters": bundle.info.get("hyperparameters"),
               "store": str(done.store), "n_failed": done.n_failed}
    outcomes = Outcomes.of([p for p, ok in zip(images.paths, use) if ok], true, predicted, *class_scores(bundle.pipeline, x))
    keep = map_rows(len(x))
    report = Report(
        bundle.classes, metrics(true, predicted, bundle.classes), details, (x[keep], true[keep]), outcomes,
        done.failures, title=f"featx evaluate: {bundle.info.get('classifier')} on {len(images):,} files",
    )
    return report, done


def predict(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights=None, **options):
    """Predictions of the bundle for every readable image in `data`; returns (Predictions, ExtractReport)."""
    images, features, found, done = _bundle_features(bundle, data, weights, **options)
    if not found.any():
        raise BadInputError(f"none of the {len(images)} images could be read: " + "; ".join(f"{p}: {r}" for p, r in done.failures[:3]))
    x, pipeline = features[found], bundle.pipeline
    scores, kind = class_scores(pipeline, x)
    predicted = [bundle.classes[i] for i in pipeline.predict(x)]
    paths = [p for p, ok in zip(images.paths, found) if ok]
    return Predictions(paths, predicted, scores, kind, bundle.classes), done
