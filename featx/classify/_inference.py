"""Inference: a saved model bundle on new images, predicting their classes or evaluating it on labelled ones.

Images whose content the model's training store holds are read from it (read only: nothing is written to it);
the others are extracted (through the cache) in the bundle's own feature space, never into the training store.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from featx.classify._bundle import ModelBundle
from featx.classify._classifiers import class_scores
from featx.errors import BadInputError, FeatxError
from featx.features._store import FeatureStore
from featx.images._inputs import ImageList
from featx.reports._figures import map_rows
from featx.reports._report import Outcomes, Report, metrics, predictions_page

if TYPE_CHECKING:
    from featx.features._extraction import ExtractReport  # imports torch: only an extraction needs it


@dataclass
class Predictions:
    """Predicted classes of image files, with per-class probabilities or decision scores. Every file has an
    entry; one that failed has an empty prediction, NaN scores and its reason in `errors` ("" for the others)."""

    paths: list[str]  # as the user gave them (a folder as given + the path below it)
    predicted: list[str]
    scores: np.ndarray
    score_kind: str  # "probability" or "score"
    classes: list[str]
    errors: list[str]

    @classmethod
    def of(cls, images: ImageList, found: np.ndarray, predicted: np.ndarray, scores: np.ndarray, kind: str,
           classes: Sequence[str], failures: Sequence[tuple[str, str]]) -> Predictions:
        """Entries for all `images`: `predicted` (class indices) and `scores` are those of the `found` ones in
        order; `failures` give the (path, reason) of the others. A file given several times has an entry each time."""
        names = np.full(len(images), "", dtype=object)
        names[found] = np.asarray(classes, dtype=object)[predicted]
        every = np.full((len(images), len(classes)), np.nan)
        every[found] = scores
        reasons = dict(failures)
        errors = np.array(["" if ok else reasons[path] for path, ok in zip(images.paths, found)], dtype=object)
        rows = np.asarray(images.given_rows, dtype=np.int64)
        return cls(list(images.given), list(names[rows]), every[rows], kind, list(classes), list(errors[rows]))

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of the files that failed."""
        return [(path, error) for path, error in zip(self.paths, self.errors) if error]

    def write_csv(self, out: TextIO) -> None:
        """path, predicted, one score per class, error (empty unless the file failed)."""
        writer = csv.writer(out)
        writer.writerow(["path", "predicted", *(f"{self.score_kind}:{c}" for c in self.classes), "error"])
        for path, name, row, error in zip(self.paths, self.predicted, self.scores, self.errors):
            writer.writerow([path, name, *("" if np.isnan(v) else f"{v:.6g}" for v in row), error])

    def write_html(self, path: str | os.PathLike) -> Path:
        """A self-contained HTML gallery of the predictions, least confident first, and the files that failed."""
        from featx.reports._html import write

        ok = [i for i, error in enumerate(self.errors) if not error]
        index = {name: i for i, name in enumerate(self.classes)}
        predicted = np.array([index[self.predicted[i]] for i in ok], dtype=np.int64)
        outcomes = Outcomes.of([self.paths[i] for i in ok], np.full(len(ok), -1), predicted, self.scores[ok], self.score_kind)
        title = f"featx predict: {len(self.paths):,} images"
        return write(path, predictions_page(outcomes, self.classes, self.failures, Path(path).parent, title))


@dataclass
class Sources:
    """Where the features came from: `n_read` files read from the model's training store (`unused`: why it
    was not, if so), the rest extracted (`extracted`: None when none had to be)."""

    n_read: int
    extracted: ExtractReport | None
    unused: str | None = None
    n_spaces: int = 1  # a fused model's: the counts add up each space's

    @property
    def failures(self) -> list[tuple[str, str]]:
        return self.extracted.failures if self.extracted else []

    @property
    def n_extracted(self) -> int:
        return self.extracted.n_extracted if self.extracted else 0

    @property
    def headline(self) -> str:
        spaces = f" ({self.n_spaces} feature spaces, counted in each)" if self.n_spaces > 1 else ""
        return f"{self.n_read} read from the training store, {self.n_extracted} extracted{spaces}"

    @classmethod
    def joined(cls, parts: Sequence[Sources]) -> Sources:
        """The sources of a fused model's spaces as one: counts added up, each failure once."""
        from dataclasses import replace

        extracted = [p.extracted for p in parts if p.extracted]
        joined = None if not extracted else replace(
            extracted[0], n_cached=sum(e.n_cached for e in extracted), n_extracted=sum(e.n_extracted for e in extracted),
            failures=list(dict(f for e in extracted for f in e.failures).items()), seconds=sum(e.seconds for e in extracted))
        return cls(sum(p.n_read for p in parts), joined, "; ".join(p.unused for p in parts if p.unused) or None,
                   len(parts))

    def summary(self) -> str:
        lines = [self.headline]
        if self.unused:
            lines.append(f"  (training store not used: {self.unused})")
        return "\n".join(lines + ([self.extracted.summary()] if self.extracted else []))


def _training_rows(bundle: ModelBundle, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(indices of the `paths` whose content the training store holds, their features, None), read only;
    (no indices, no features, why) when the store is missing, unreadable or in another feature space.
    Files are found by content, so a moved or copied file is found too."""
    from featx.images._content import content_keys

    try:
        with FeatureStore.open(bundle.training_store()) as store:
            bundle.check_space(store.space, store.dtype)
            row_of = {key: row for row, key in enumerate(store.keys())}
            rows = np.array([row_of.get(hashed.key, -1) for hashed in content_keys(paths)], dtype=np.int64)
            held = np.flatnonzero(rows >= 0)
            return held, store.rows(rows[held]), None
    except FeatxError as exc:
        return np.zeros(0, dtype=np.int64), np.zeros((0, bundle.width)), str(exc)


def _extracted_rows(bundle: ModelBundle, images: ImageList, weights, device: str = "auto", **options):
    """Extract `images` in the bundle's feature space; (their features, zero where missing; mask of the files
    that have them; the ExtractReport).

    Unless `store` is given, into a store of their own under cache/apply/, never the store a model was
    trained on: images predicted or evaluated must not join the next `featx fit`'s training data.
    """
    from featx.features._extraction import extract_files
    from featx.features._space import cache_dir
    from featx.outputs import check_output

    if options.get("store") is None:
        options["store"] = check_output(cache_dir() / "apply" / bundle.space.store_path(bundle.dtype).name,
                                        "working folder (or set FEATX_CACHE)")
    done = extract_files(images, bundle.extractor(weights, device), dtype=bundle.dtype, **options)
    if not done.store.exists():  # every file failed, and no store was kept
        return np.zeros((len(images), bundle.width)), np.zeros(len(images), dtype=bool), done
    with FeatureStore.open(done.store) as opened:
        bundle.check_space(opened.space, opened.dtype)
        features, found = opened.features_for(images.paths)
    return features, found, done


def _bundle_features(bundle: ModelBundle, data, weights, **options):
    """The images in `data` and their features in the bundle's feature space: rows of the training store where
    it holds their content, the others extracted. Returns (images, features, mask of the files that have
    features, Sources)."""
    from featx.images._inputs import find_images

    if bundle.extra_spaces:  # a fused model (featx compare): each space's features, side by side
        done = [_bundle_features(part, data, weights, **options) for part in bundle.parts()]
        return (done[0][0], np.hstack([features for _, features, _, _ in done]),
                np.logical_and.reduce([found for _, _, found, _ in done]), Sources.joined([s for *_, s in done]))
    images = find_images(data)
    features = np.zeros((len(images), bundle.width), dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    held, rows, unused = _training_rows(bundle, images.paths)
    features[held], found[held] = rows, True
    rest, extracted = np.flatnonzero(~found), None
    if len(rest):
        others = ImageList([images.paths[i] for i in rest], images.labels[rest], images.classes, images.roots)
        features[rest], found[rest], extracted = _extracted_rows(bundle, others, weights, **options)
    return images, features, found, Sources(len(held), extracted, unused)


def evaluate(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights=None, **options):
    """Report of the bundle on labelled images (class folders or CSV labels); returns (Report, Sources).

    `options` go to `featx.extract` (device, batch_size, workers, progress).
    """
    images, features, found, sources = _bundle_features(bundle, data, weights, **options)
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
               "features": sources.headline, "n_failed": len(sources.failures)}
    outcomes = Outcomes.of([p for p, ok in zip(images.paths, use) if ok], true, predicted, *class_scores(bundle.pipeline, x))
    keep = map_rows(len(x))
    report = Report(
        bundle.classes, metrics(true, predicted, bundle.classes), details, (x[keep], true[keep]), outcomes,
        sources.failures, title=f"featx evaluate: {bundle.info.get('classifier')} on {len(images):,} files",
    )
    return report, sources


def predict(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights=None, **options):
    """Predictions of the bundle for every image in `data` (those that failed: their reasons); returns
    (Predictions, Sources)."""
    images, features, found, sources = _bundle_features(bundle, data, weights, **options)
    scores, kind = class_scores(bundle.pipeline, features)  # rows of failed files (zeros) are dropped by `of`
    predicted = bundle.pipeline.predict(features)
    return Predictions.of(images, found, predicted[found], scores[found], kind, bundle.classes, sources.failures), sources
