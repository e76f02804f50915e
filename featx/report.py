"""Classification reports: metrics, a printable table, JSON, a confusion-matrix plot and a 2-D feature map.

matplotlib is imported only when a plot is drawn (Agg backend, no display needed).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAP_POINTS = 3000  # at most this many points in the feature map (t-SNE is quadratic)


def map_rows(n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the samples drawn for the feature map: all of them up to MAP_POINTS, else a random subset."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:MAP_POINTS])


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

    def save(self, prefix: str | os.PathLike, tsne: bool = False) -> list[Path]:
        """Write PREFIX.json, PREFIX-confusion.png and PREFIX-pca.png (and PREFIX-tsne.png); return the paths."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        written = [prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + "-confusion.png")]
        written[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        plot_confusion(np.array(self.metrics["confusion_matrix"]), self.classes, written[1])
        if self.sample is not None and len(self.sample[0]) >= 3:
            for method in ("pca", "tsne") if tsne else ("pca",):
                written.append(prefix.with_name(f"{prefix.name}-{method}.png"))
                plot_feature_map(*self.sample, self.classes, written[-1], method)
        return written


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    size = 2.5 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_feature_map(features: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, method: str = "pca") -> None:
    """Standardised features projected to 2-D by PCA or t-SNE, one colour per class."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    keep = map_rows(len(features))
    features, labels = features[keep], labels[keep]
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float32))
    with threadpool_limits(limits=1, user_api="blas"):  # threaded BLAS on small matrices only adds contention
        if method == "tsne":
            points = TSNE(perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=0).fit_transform(x)
        else:
            points = PCA(n_components=2, random_state=0).fit_transform(x)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(classes):
        members = labels == i
        ax.scatter(points[members, 0], points[members, 1], s=8, alpha=0.7, label=name)
    ax.set_title(f"features ({method.upper() if method == 'pca' else 't-SNE'})")
    ax.legend(markerscale=2, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
