"""Choosing the RBF SVM's C (`featx fit --clf svm`): GridSearchCV over a plain SVC against the same search on
shared precomputed kernels (featx.classify._classifiers.RBFGram), in the same run, on real ELPV features.

    python benchmarks/svm_selection.py [--per-class N] [--store STORE]

Features: the demo's (EfficientNet-Lite0, 300 px, GeM-pooled late stages) of ELPV cells, extracted into STORE
(default: a temporary one; all 2,624 cells unless --per-class). The search is fit's: standardised features,
C over the svm grid, stratified 5-fold CV on 75% of the rows, one process. Prints CPU seconds (process time:
robust on a shared machine), their ratio, and the largest difference between the two searches' CV scores.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from featx.cli.demo import DEMO_FEATURES
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import featx
from featx.classify._classifiers import CLASSIFIERS, RBFGram
from featx.datasets import write_elpv_folder


def search(steps: list, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(CPU seconds, mean CV score per C) of fit's grid search over `steps` + an SVC."""
    grid = {"clf__C": list(CLASSIFIERS["svm"].grid)}
    start = time.process_time()
    done = GridSearchCV(Pipeline(steps), grid, scoring="balanced_accuracy", refit=False,
                        cv=StratifiedKFold(5, shuffle=True, random_state=0)).fit(x, y)
    return time.process_time() - start, done.cv_results_["mean_test_score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, help="ELPV cells per class (default: all).")
    parser.add_argument("--store", type=Path, help="Store to extract into or reuse (default: a temporary one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        images = write_elpv_folder(Path(folder) / "cells", per_class=args.per_class)
        store = args.store or Path(folder) / "features.h5"
        featx.extract(images, store=store, progress=False, **DEMO_FEATURES)
        data = featx.load_features(store)
        ours = np.array([Path(p).absolute().is_relative_to(images.absolute()) for p in data.paths])  # a reused store may hold more
    x, _, y, _ = train_test_split(data.features[ours], data.labels[ours], test_size=0.25, stratify=data.labels[ours], random_state=0)
    plain, plain_scores = search([("scale", StandardScaler()), ("clf", SVC(gamma="scale"))], x, y)
    shared, shared_scores = search([("scale", StandardScaler()), ("gram", RBFGram()), ("clf", SVC(kernel="precomputed"))], x, y)
    print(f"{len(x):,} training rows x {x.shape[1]:,} features, {len(plain_scores)} values of C x 5 folds")
    print(f"plain RBF SVC          {plain:7.1f} s CPU")
    print(f"shared kernels (featx) {shared:7.1f} s CPU  ratio {shared / plain:.2f}  "
          f"largest CV score difference {np.abs(plain_scores - shared_scores).max():.1e}")


if __name__ == "__main__":
    main()
