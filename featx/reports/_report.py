"""Classification reports: metrics, a printable table, JSON, a confusion-matrix plot, a 2-D feature map, and
one self-contained HTML page of them all with galleries of the images behind the numbers.

matplotlib is imported only when a figure is drawn (featx/reports/_figures.py).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall, the confusion matrix and the classes
    absent from `y_true`: balanced accuracy and macro F1 average over the classes present (an absent class
    has no recall, and would count as an F1 of 0)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = np.arange(len(classes))
    present = np.unique(y_true)
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # sklearn's balanced_accuracy_score is this mean, but warns when a class is predicted and absent
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "majority_rate": float(np.bincount(y_true, minlength=len(classes)).max() / max(len(y_true), 1)),
        "absent_classes": [classes[i] for i in np.setdiff1d(labels, present)],
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def absent_line(m: dict) -> str | None:
    """The one line that names the classes absent from the data, when some are."""
    absent = m["absent_classes"]
    if not absent:
        return None
    n = len(m["per_class"]) - len(absent)
    return f"absent from these data: {', '.join(absent)} (balanced accuracy and macro F1 over the {n} classes present)"


def report_prefix(model: str | os.PathLike, evaluated: Sequence[str | os.PathLike] = ()) -> Path:
    """Where a model's report files go: MODEL (its full file name: featx-sgd.skops and featx-sgd.joblib
    keep separate reports), or MODEL.eval-<DATA> for an evaluation on DATA (its folder or file names)."""
    model = Path(model)
    if not evaluated:
        return model
    return model.with_name(f"{model.name}.eval-{_data_name(evaluated)}")


def report_files(prefix: str | os.PathLike, figures: Iterable[str] = ("confusion", "pca", "tsne")) -> list[Path]:
    """The files `Report.save(prefix)` writes: PREFIX.html, PREFIX.json and PREFIX-<figure>.png (by default every
    figure it may draw: for the checks before the work)."""
    prefix = Path(prefix)
    return [prefix.with_name(prefix.name + ".html"), prefix.with_name(prefix.name + ".json"),
            *(prefix.with_name(f"{prefix.name}-{name}.png") for name in figures)]


def _data_name(data: Sequence[str | os.PathLike]) -> str:
    """A file-name part naming the evaluated data: 'cells', 'test', 'a+b'; many names: the first, the count
    and a digest of them all (a shell glob of images gives thousands)."""
    import hashlib

    paths = [Path(os.path.abspath(source)) for source in data]
    names = [re.sub(r"[^\w.+-]+", "_", path.stem if path.is_file() else path.name) or "_" for path in paths]
    joined = "+".join(names)
    if len(joined) <= 60:
        return joined
    digest = hashlib.blake2b(joined.encode(), digest_size=4).hexdigest()
    return f"{names[0][:30]}+{len(names) - 1}-more-{digest}"


MISTAKES_SHOWN = 200  # the most confident mistakes in the HTML report
CORRECT_SHOWN = 6  # correct examples per class
PREDICTIONS_SHOWN = 120  # the least confident predictions of `featx predict --report`
PAGE_FAILURES_SHOWN = 500  # files that failed listed on a report page (a line each; the text summaries: images.FAILURES_SHOWN)


@dataclass
class Outcomes:
    """What the model said about each image: its file, true class index (-1: unlabelled), predicted class index
    and the score of the predicted class (a probability, or a decision score: `score_kind`)."""

    paths: list[str]
    true: np.ndarray
    predicted: np.ndarray
    score: np.ndarray
    score_kind: str = "score"

    @classmethod
    def of(cls, paths: list[str], true: np.ndarray, predicted: np.ndarray, scores: np.ndarray, kind: str) -> Outcomes:
        """From the n x classes scores: the score of each predicted class."""
        predicted = np.asarray(predicted)
        return cls(list(paths), np.asarray(true), predicted, scores[np.arange(len(predicted)), predicted], kind)

    def mistakes(self) -> np.ndarray:
        """Indices of the misclassified labelled images, most confident first."""
        wrong = np.flatnonzero((self.true >= 0) & (self.true != self.predicted))
        return wrong[np.argsort(-self.score[wrong], kind="stable")]

    def correct(self, label: int) -> np.ndarray:
        """Indices of the images of class `label` classified right, most confident first."""
        right = np.flatnonzero((self.true == label) & (self.predicted == label))
        return right[np.argsort(-self.score[right], kind="stable")]

    def least_confident(self) -> np.ndarray:
        """Every index, lowest score first."""
        return np.argsort(self.score, kind="stable")

    def items(self, indices: np.ndarray, classes: list[str]) -> list:
        """Gallery items (file, true and predicted class, score) of the given images."""
        from featx.reports._html import GalleryItem

        def lines(i: int) -> list[str]:
            true = [f"true: {classes[self.true[i]]}"] if self.true[i] >= 0 else []
            return [*true, f"predicted: {classes[self.predicted[i]]}", f"{self.score_kind}: {self.score[i]:.3f}"]

        return [GalleryItem(self.paths[i], lines(i)) for i in indices]


@dataclass
class Report:
    """Metrics on held-out data plus how they were obtained (`details`: classifier, hyperparameters, CV...).

    `sample` (features, labels) feeds the feature map, `outcomes` the galleries and `failures` (path, reason)
    the list of unreadable files; they are not saved in the JSON.
    """

    classes: list[str]
    metrics: dict
    details: dict = field(default_factory=dict)
    sample: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    outcomes: Outcomes | None = field(default=None, repr=False)
    failures: list[tuple[str, str]] = field(default_factory=list, repr=False)
    title: str = "featx report"

    def to_dict(self) -> dict:
        return {"classes": self.classes, **self.details, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, saved: dict) -> Report:
        """The report saved as JSON (`save`), without what the JSON does not hold: figures' sample, galleries."""
        details = {key: value for key, value in saved.items() if key not in ("classes", "metrics")}
        return cls(saved["classes"], saved["metrics"], details)

    def table(self) -> str:
        """The report as aligned text."""
        m, lines = self.metrics, []
        for key, value in self.details.items():
            if key != "cv_scores":
                lines.append(f"{key + ':':<18}{json.dumps(value) if isinstance(value, (dict, list)) else value}")
        for row in self.details.get("cv_scores", []):
            lines.append(f"  cv {row['param']}={row['value']:<10g} {row['mean']:.3f} ± {row['std']:.3f}")
        lines.append(
            f"accuracy {m['accuracy']:.3f}   balanced accuracy {m['balanced_accuracy']:.3f}   "
            f"macro F1 {m['macro_f1']:.3f}   (majority class: {m['majority_rate']:.3f}, n={m['n']})"
        )
        if absent := absent_line(m):
            lines.append(absent)
        width = max(len(c) for c in self.classes) + 2
        lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'support':>10}")
        for name, row in m["per_class"].items():
            lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['support']:>10d}")
        return "\n".join(lines)

    def figures(self, tsne: bool = False) -> dict[str, bytes]:
        """PNG bytes of the figures by name: "confusion", and "pca" (and "tsne") when there is a sample to map."""
        from featx.reports._figures import confusion_figure, feature_map_figure, png

        drawn = {"confusion": png(confusion_figure(np.array(self.metrics["confusion_matrix"]), self.classes))}
        if self.sample is not None and len(self.sample[0]) >= 3:
            for method in ("pca", "tsne") if tsne else ("pca",):
                drawn[method] = png(feature_map_figure(*self.sample, self.classes, method))
        return drawn

    def html(self, drawn: dict[str, bytes], folder: str | os.PathLike) -> str:
        """The HTML page of the report, for a file in `folder`; `drawn` are the figures' PNG bytes."""
        from featx.reports import _html as h

        m = self.metrics
        summary = {
            "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"], "macro F1": m["macro_f1"],
            "majority class rate": m["majority_rate"], "images": m["n"],
            **({"absent classes": ", ".join(m["absent_classes"])} if m["absent_classes"] else {}),
            **{key: json.dumps(value) if isinstance(value, (dict, list)) else value
               for key, value in self.details.items() if key != "cv_scores"},
        }
        per_class = [(name, row["precision"], row["recall"], row["support"]) for name, row in m["per_class"].items()]
        sections = [
            h.section("Metrics", h.row(h.metrics_table(summary),
                                       h.table(["class", "precision", "recall", "support"], per_class))),
            h.section("Confusion matrix and feature map", h.figures(drawn),
                      *([] if "stores" in self.details else  # a model on several stores' spaces: featx map takes one
                        [h.paragraph(f"Every image on an interactive map (zoom, hover thumbnails, the model's predictions): "
                                     f"featx map {self.details.get('store', 'STORE')} --color prediction --model MODEL")])),
        ]
        if self.details.get("cv_scores"):
            rows = [(f"{r['param']}={r['value']:g}", r["mean"], r["std"]) for r in self.details["cv_scores"]]
            sections.append(h.section("Model selection", h.table(["value", f"CV {self.details.get('scoring', '')}", "std"], rows)))
        if self.outcomes is not None:
            sections += _galleries(self.outcomes, self.classes, folder)
        sections += _failures(self.failures, folder)
        subtitle = f"{m['n']:,} images, {len(self.classes)} classes"
        return h.page(self.title, sections, subtitle)

    def write_test_csv(self, path: str | os.PathLike) -> Path:
        """The test images as a CSV of path,class (paths relative to the CSV, as featx reads them)."""
        import csv

        from featx.images._inputs import CSV_TEXT
        from featx.outputs import atomic_write

        path = Path(path)
        with atomic_write(path, "w", newline="", **CSV_TEXT) as out:
            rows = zip(self.outcomes.paths, self.outcomes.true)
            csv.writer(out).writerows((os.path.relpath(p, path.parent), self.classes[label]) for p, label in rows)
        return path

    def save(self, prefix: str | os.PathLike, tsne: bool = False) -> list[Path]:
        """Write PREFIX.html (everything, one self-contained file), PREFIX.json, PREFIX-confusion.png and
        PREFIX-pca.png (and PREFIX-tsne.png); return the paths, the HTML page first."""
        from featx.outputs import atomic_write
        from featx.reports._html import write

        drawn = self.figures(tsne)
        written = report_files(prefix, drawn)
        with atomic_write(written[1], "w") as out:
            out.write(json.dumps(self.to_dict(), indent=2) + "\n")
        for path, data in zip(written[2:], drawn.values()):
            with atomic_write(path) as out:
                out.write(data)
        write(written[0], self.html(drawn, Path(prefix).parent))
        return written


def _galleries(outcomes: Outcomes, classes: list[str], folder) -> list[str]:
    """Sections: the most confident mistakes, then the most confident correct examples of each class."""
    from featx.reports import _html as h

    wrong = outcomes.mistakes()
    shown = f"the {MISTAKES_SHOWN} most confident of " if len(wrong) > MISTAKES_SHOWN else ""
    sections = [h.section(
        f"Mistakes ({len(wrong):,})",
        h.paragraph(f"{shown}{len(wrong):,} misclassified images, most confident first" if len(wrong) else "none"),
        h.gallery(outcomes.items(wrong[:MISTAKES_SHOWN], classes), folder),
    )]
    for label, name in enumerate(classes):
        right = outcomes.correct(label)[:CORRECT_SHOWN]
        if len(right):
            sections.append(h.section(f"Correct: {name}", h.gallery(outcomes.items(right, classes), folder)))
    return sections


def _failures(failures: list[tuple[str, str]], folder) -> list[str]:
    """A section listing unreadable files and why, when there are any."""
    from featx.reports import _html as h

    if not failures:
        return []
    more = f" (the first {PAGE_FAILURES_SHOWN})" if len(failures) > PAGE_FAILURES_SHOWN else ""
    return [h.section(f"Files that could not be read ({len(failures):,}){more}", h.file_list(failures[:PAGE_FAILURES_SHOWN], folder))]


def predictions_page(outcomes: Outcomes, classes: list[str], failures: list[tuple[str, str]], folder: str | os.PathLike,
                     title: str) -> str:
    """The HTML page of `featx predict --report`: predictions of unlabelled images, least confident first."""
    from featx.reports import _html as h

    order = outcomes.least_confident()
    counts = np.bincount(outcomes.predicted, minlength=len(classes))
    shown = f"the {PREDICTIONS_SHOWN} least confident of " if len(order) > PREDICTIONS_SHOWN else ""
    sections = [
        h.section("Predicted classes", h.table(["class", "images"], [(c, int(n)) for c, n in zip(classes, counts)])),
        h.section("Predictions", h.paragraph(f"{shown}{len(order):,} images, least confident first"),
                  h.gallery(outcomes.items(order[:PREDICTIONS_SHOWN], classes), folder)),
        *_failures(failures, folder),
    ]
    return h.page(title, sections, f"{len(order):,} images predicted, {len(failures):,} unreadable")
