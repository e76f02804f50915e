"""Classification reports: metrics, a printable table, JSON, a confusion-matrix plot and a 2-D feature map.

matplotlib is imported only when a figure is drawn (featx/figures.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np



def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = np.arange(len(classes))
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "majority_rate": float(np.bincount(y_true, minlength=len(classes)).max() / max(len(y_true), 1)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


@dataclass
class Report:
    """Metrics on held-out data plus how they were obtained (`details`: classifier, hyperparameters, CV...).

    `sample` (features, labels) feeds the feature map; it is not saved in the JSON.
    """

    classes: list[str]
    metrics: dict
    details: dict = field(default_factory=dict)
    sample: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"classes": self.classes, **self.details, "metrics": self.metrics}

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
        width = max(len(c) for c in self.classes) + 2
        lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'support':>10}")
        for name, row in m["per_class"].items():
            lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['support']:>10d}")
        return "\n".join(lines)

    def figures(self, tsne: bool = False) -> dict[str, bytes]:
        """PNG bytes of the figures by name: "confusion", and "pca" (and "tsne") when there is a sample to map."""
        from .figures import confusion_figure, feature_map_figure, png

        drawn = {"confusion": png(confusion_figure(np.array(self.metrics["confusion_matrix"]), self.classes))}
        if self.sample is not None and len(self.sample[0]) >= 3:
            for method in ("pca", "tsne") if tsne else ("pca",):
                drawn[method] = png(feature_map_figure(*self.sample, self.classes, method))
        return drawn

    def save(self, prefix: str | os.PathLike, tsne: bool = False) -> list[Path]:
        """Write PREFIX.json, PREFIX-confusion.png and PREFIX-pca.png (and PREFIX-tsne.png); return the paths."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        written = [prefix.with_name(prefix.name + ".json")]
        written[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        for name, data in self.figures(tsne).items():
            written.append(prefix.with_name(f"{prefix.name}-{name}.png"))
            written[-1].write_bytes(data)
        return written
