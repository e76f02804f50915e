"""ELPV solar cells with frozen pretrained features, under the protocol of Deitsch et al. (Solar Energy 2019).

    FEATX_CACHE=/tmp/elpv-cache python benchmarks/elpv.py [--seeds 0,1,2] [--configs NAME,...] [--quick]

4 classes of defect probability (0, 1/3, 2/3, 1); stratified 75/25 splits by class and cell type, one per
seed. Each feature set is extracted once through featx's store (`PretrainedFeatures`; a rerun reads the
cache); configurations that use some of its stages take those columns. The classifier's C is chosen by
5-fold cross-validation on the training part only; the test part is used once, for the reported scores.
Prints, per configuration, mean ± std over seeds of the 4-class accuracy, the balanced accuracy, the
binary accuracy (defective if probability >= 0.5) and the CV accuracy, next to the paper's numbers.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC

import featx
from featx import PretrainedFeatures
from featx.datasets import ELPV_PAPER as PAPER, load_elpv

STAGES = ("blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "bn2")  # bn2: the default head features
HEAD, LATE = ("bn2",), ("blocks.5", "blocks.6", "bn2")
VIEW_BATCH = 32  # images whose 8 views go through the transformer at once


@dataclass(frozen=True)
class FeatureSet:
    """A store's worth of features: `PretrainedFeatures` parameters, and whether the 8 symmetries are extracted."""

    image_size: int | None = 300
    pooling: str = "avg"
    stages: tuple[str, ...] = STAGES
    views: bool = False

    def transformer(self) -> PretrainedFeatures:
        return PretrainedFeatures(image_size=self.image_size, pooling=self.pooling, layer=",".join(self.stages))


@dataclass(frozen=True)
class Config:
    """One row of the table: feature sets (several: concatenated; `stages` picks their columns), how views are
    used, normalisation, classifier."""

    name: str
    features: FeatureSet | tuple[FeatureSet, ...]
    stages: tuple[str, ...] = HEAD
    views: str = "single"  # single | mean (D4-averaged features) | train (D4 training set, averaged decisions)
    normalise: str = "standard"  # standard | sqrt-l2 | pca-white
    clf: str = "svm"  # svm (RBF) | logreg


CROP224 = FeatureSet(image_size=None, stages=HEAD)
NATIVE = {p: FeatureSet(pooling=p) for p in ("avg", "max", "gem")}
NATIVE_D4 = FeatureSet(pooling="gem", views=True)
UPSAMPLED = FeatureSet(image_size=448, pooling="gem")
UPSAMPLED_D4 = FeatureSet(image_size=448, pooling="gem", views=True)

CONFIGS = [
    Config("224-crop", CROP224),
    *(Config(f"300-{p}", NATIVE[p]) for p in ("avg", "max", "gem")),
    *(Config(f"300-{p}-late", NATIVE[p], LATE) for p in ("avg", "max", "gem")),
    *(Config(f"300-{p}-stages", NATIVE[p], STAGES) for p in ("avg", "max", "gem")),
    Config("300-gem-late-sqrt", NATIVE["gem"], LATE, normalise="sqrt-l2"),
    Config("300-gem-late-pca", NATIVE["gem"], LATE, normalise="pca-white"),
    Config("448-gem-late", UPSAMPLED, LATE),
    Config("300+448-gem-late", (NATIVE["gem"], UPSAMPLED), LATE),
    *(Config(f"300-gem{s}-d4{v}", NATIVE_D4, stages, views=v) for s, stages in (("", HEAD), ("-late", LATE))
      for v in ("mean", "train")),
    Config("300-gem-late-d4mean-sqrt", NATIVE_D4, LATE, views="mean", normalise="sqrt-l2"),
    Config("448-gem-late-d4mean", UPSAMPLED_D4, LATE, views="mean"),
    Config("300+448-gem-late-d4mean", (NATIVE_D4, UPSAMPLED_D4), LATE, views="mean"),
    Config("300-avg+max-late", (NATIVE["avg"], NATIVE["max"]), LATE),
    Config("224-crop-logreg", CROP224, clf="logreg"),
]
C_GRID = [3.0, 10.0, 30.0]


def columns(names: np.ndarray, wanted: tuple[str, ...]) -> np.ndarray:
    """Indices of the columns of the `wanted` stages, given the transformer's feature names ("<stage>_<i>")."""
    stages = np.array([name.rsplit("_", 1)[0] for name in names])
    return np.concatenate([np.flatnonzero(stages == s) for s in wanted])


def extract(features: FeatureSet, filenames: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(features: n x D, or n x 8 x D with views; their column names; seconds): through the store, so a rerun
    only reads it."""
    start = time.perf_counter()
    transformer = features.transformer().fit(filenames[:1])
    names = transformer.get_feature_names_out()
    if not features.views:
        return transformer.transform(filenames), names, time.perf_counter() - start
    blocks = []
    for i in range(0, len(filenames), VIEW_BATCH):
        views = [view for path in filenames[i : i + VIEW_BATCH] for view in featx.symmetries(Image.open(path))]
        features = transformer.transform(views)
        blocks.append(features.reshape(-1, 8, features.shape[1]))
    return np.concatenate(blocks), names, time.perf_counter() - start


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.sqrt(np.abs(x))


def classifier(config: Config, seed: int) -> GridSearchCV:
    """Normalisation + classifier, C by stratified 5-fold CV (on whatever training data it is given)."""
    steps = {
        "standard": [StandardScaler()],
        "sqrt-l2": [FunctionTransformer(signed_sqrt), Normalizer(), StandardScaler()],
        "pca-white": [StandardScaler(), PCA(0.95, whiten=True, random_state=seed)],
    }[config.normalise]
    last = SVC(kernel="rbf") if config.clf == "svm" else LogisticRegression(max_iter=3000)
    pipe: Pipeline = make_pipeline(*steps, last)
    grid = {f"{pipe.steps[-1][0]}__C": C_GRID if config.clf == "svm" else [0.001, 0.01, 0.1]}
    return GridSearchCV(pipe, grid, cv=StratifiedKFold(5, shuffle=True, random_state=seed), n_jobs=1)


def evaluate(config: Config, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> dict:
    """Scores of one configuration on one split; selection sees the training part only."""
    search = classifier(config, seed)
    if config.views == "train":  # C chosen on the D4-averaged training features, then one fit on all 8 views
        search.fit(X[train].mean(1), y[train])
        model = search.best_estimator_.fit(X[train].reshape(-1, X.shape[-1]), np.repeat(y[train], 8))
        n_test = len(test)
        scores = model.decision_function(X[test].reshape(-1, X.shape[-1])).reshape(n_test, 8, -1).mean(1)
        predicted = model.classes_[scores.argmax(1)]
    else:
        features = X.mean(1) if config.views == "mean" else X
        search.fit(features[train], y[train])
        predicted = search.predict(features[test])
    return {
        "accuracy": accuracy_score(y[test], predicted),
        "balanced": balanced_accuracy_score(y[test], predicted),
        "binary": accuracy_score(y[test] >= 2, predicted >= 2),  # probability >= 0.5: classes 2 and 3
        "cv": search.best_score_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated split seeds.")
    parser.add_argument("--configs", help="Comma-separated configuration names (default: all).")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 160 images, one seed.")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [c for c in CONFIGS if args.configs is None or c.name in args.configs.split(",")]
    data = load_elpv()
    strata = data.target * 2 + (data.cell_type == "mono")
    subset = np.arange(len(data.target))
    if args.quick:
        seeds = seeds[:1]
        subset = train_test_split(subset, train_size=160, stratify=strata, random_state=0)[0]
    filenames, y, strata = data.filenames[subset], data.target[subset], strata[subset]
    start = time.perf_counter()
    extracted: dict[FeatureSet, tuple[np.ndarray, np.ndarray]] = {}  # features, column names
    rows = []
    for config in configs:
        sets = config.features if isinstance(config.features, tuple) else (config.features,)
        for features in sets:
            if features not in extracted:
                x, names, seconds = extract(features, filenames)
                extracted[features] = x, names
                print(f"extracted {features} in {seconds:.0f} s", flush=True)
        X = np.concatenate([x[..., columns(names, config.stages)] for x, names in map(extracted.get, sets)], axis=-1)
        scores = []
        for seed in seeds:
            train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=strata, random_state=seed)
            scores.append(evaluate(config, X, y, train, test, seed))
        rows.append((config.name, {k: 100 * np.array([s[k] for s in scores]) for k in scores[0]}))
        print(row(*rows[-1]), flush=True)
    print(f"\n{len(y)} images, seeds {seeds}, total {time.perf_counter() - start:.0f} s\n")
    print("| configuration | 4-class accuracy | balanced accuracy | binary accuracy | CV accuracy (train) |")
    print("|---|---|---|---|---|")
    for name, values in rows:
        print(row(name, values))
    for name, value in PAPER.items():
        print(f"| {name} (paper) | {value:.2f} | | | |")


def row(name: str, values: dict[str, np.ndarray]) -> str:
    cells = " | ".join(f"{v.mean():.2f} ± {v.std():.2f}" for v in values.values())
    return f"| {name} | {cells} |"


if __name__ == "__main__":
    main()
