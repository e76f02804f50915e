"""What applying a model to images gives: `Predictions` (one entry per file, failures included) and `Sources`
(where the features came from), shared by fitted bundles and fine-tuned networks."""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from featx.errors import BadInputError
from featx.images._inputs import ImageList
from featx.reports._report import Outcomes, predictions_page

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
        cached = self.extracted.n_cached if self.extracted else 0
        aside = f", {cached} read from the apply cache (extracted by an earlier run)" if cached else ""
        return f"{self.n_read} read from the training store, {self.n_extracted} extracted{aside}{spaces}"

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


def labels_in(images: ImageList, classes: Sequence[str], data: object = None) -> np.ndarray:
    """Each image's label as an index into a model's `classes` (-1: unlabelled); BadInputError for a class the
    model does not know (naming `data`, the inputs as given), or no labelled image at all."""
    where = "" if data is None else f"{', '.join(map(str, data)) if isinstance(data, (list, tuple)) else data}: "
    unknown = sorted(set(images.classes) - set(classes))
    if unknown:
        raise BadInputError(f"{where}classes the model does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    if not (images.labels >= 0).any():
        raise BadInputError(f"{where}no labelled image (evaluate needs class folders or CSV labels; featx predict "
                            "handles unlabelled images)")
    index = np.array([list(classes).index(c) for c in images.classes] + [-1], dtype=np.int64)
    return index[images.labels]  # label -1 picks the trailing -1


def check_some_read(read: np.ndarray, failures: Sequence[tuple[str, str]]) -> None:
    """BadInputError (one line, with the failures' reasons) when none of the labelled images evaluate was given
    could be read: `read` is the mask of those that were."""
    if not read.any():
        from featx.images._failures import failure_line

        raise BadInputError(f"none of the {len(read)} labelled images could be read ({failure_line(failures)})")
