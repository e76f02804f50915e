"""Report figures drawn on `matplotlib.figure.Figure` objects: no pyplot state, no backend switch, so a
notebook's own backend is left alone. `png(figure)` gives the bytes that files and the HTML report share."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MAP_POINTS = 3000  # at most this many points in the feature map (t-SNE is quadratic)


def map_rows(n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the samples drawn for the feature map: all of them up to MAP_POINTS, else a random subset."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:MAP_POINTS])


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (no metadata: matplotlib's default names its web site)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no matplotlib URL inside
    return buffer.getvalue()


def confusion_figure(matrix: np.ndarray, classes: list[str]) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    from matplotlib.figure import Figure

    size = 2.5 + 0.6 * len(classes)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=ax)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    return figure


def projection(features: np.ndarray, method: str = "pca") -> np.ndarray:
    """Standardised features projected to 2-D by "pca", "tsne" or "umap" (umap-learn: the umap extra)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float32))
    if method == "umap":
        try:
            import umap
        except ImportError:
            from featx.errors import FeatxError

            raise FeatxError('--method umap needs umap-learn: pip install "featx[umap]"') from None
        return umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=0).fit_transform(x)
    with threadpool_limits(limits=1, user_api="blas"):  # threaded BLAS on small matrices only adds contention
        if method == "tsne":
            return TSNE(perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=0).fit_transform(x)
        return PCA(n_components=2, random_state=0).fit_transform(x)


def feature_map_figure(features: np.ndarray, labels: np.ndarray, classes: list[str], method: str = "pca") -> Figure:
    """Standardised features projected to 2-D by PCA or t-SNE, one colour per class (at most MAP_POINTS)."""
    from matplotlib.figure import Figure

    keep = map_rows(len(features))
    features, labels = features[keep], labels[keep]
    points = projection(features, method)
    figure = Figure(figsize=(7, 6))
    ax = figure.subplots()
    for i, name in enumerate(classes):
        members = labels == i
        ax.scatter(points[members, 0], points[members, 1], s=8, alpha=0.7, label=name)
    ax.set_title(f"features ({method.upper() if method == 'pca' else 't-SNE'})")
    ax.legend(markerscale=2, fontsize="small")
    figure.tight_layout()
    return figure


def scores_figure(names: list[str], means: list[float], stds: list[float], label: str) -> Figure:
    """Horizontal bars of scores (`label`) with their spread (error bars), the first name on top."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 1.2 + 0.35 * len(names)))
    ax = figure.subplots()
    ax.barh(range(len(names)), means, xerr=stds, color="tab:blue", capsize=3)
    ax.set(yticks=range(len(names)), xlabel=label, xlim=(max(0.0, min(means) - 2 * max(stds) - 0.05), 1))
    ax.set_yticklabels(names, fontsize="small")
    ax.invert_yaxis()
    figure.tight_layout()
    return figure
