"""Ranking of planted label errors by each classifier `featx audit` can use (docs/audit.md, "Which classifier").

The set: --functional functional and --defective defective ELPV cells (defect probability 0 and 1; the
clearly defective cells of audit_elpv.clearly_defective left out), plus --errors clearly defective cells
filed as functional. For each option (one of featx's classifiers, "auto" = featx audit's default choice,
and the mean of two classifiers' probabilities), the out-of-fold probabilities rank the images by cleanlab's
label quality (`featx audit` uses self-confidence; two other cleanlab scores are compared); printed: the CV
balanced accuracy and how many planted errors are in the top 1x and 3x the number planted.

Features come from a store of the ELPV cells (--base-store, default backbone; made when missing: the
published folder of audit_elpv as symbolic links, `featx extract`).

    python benchmarks/audit_planted.py [--base-store STORE] [--functional 150] [--defective 150] [--errors 15]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import featx
from featx.auditing._audit import AUTO, CANDIDATES, cv_score, out_of_fold
from featx.datasets import load_elpv

from audit_elpv import clearly_defective, link_folder  # noqa: E402  (benchmarks/ is the script's folder)

OPTIONS = ("logreg", "linsvm", "svm", "knn", "sgd", AUTO, "logreg+svm", "logreg+linsvm", "logreg+linsvm+svm")
METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")  # cleanlab's label quality scores


def elpv_features(base: str | None) -> tuple[dict[str, np.ndarray], object]:
    """File name -> feature vector of every ELPV cell, and the ELPV data set."""
    elpv = load_elpv()
    store = Path(base) if base else Path(tempfile.mkdtemp(prefix="featx-planted-")) / "elpv.h5"
    root = store.parent / "published"
    link_folder(root, {i: elpv.target_names[t] for i, t in enumerate(elpv.target)}, elpv.filenames)
    featx.extract(root, store=store, progress=False)
    loaded = featx.load_features(store)
    return {Path(p).name: f for p, f in zip(loaded.paths, loaded.features)}, elpv


def planted_set(elpv, n_functional: int, n_defective: int, n_errors: int, seed: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(cell indices, given labels 0/1, planted mask)."""
    rng = np.random.default_rng(seed)
    clear = clearly_defective(elpv)
    errors = rng.choice(clear, n_errors, replace=False)
    functional = rng.choice(np.flatnonzero(elpv.target == 0), n_functional, replace=False)
    defective = rng.choice(np.setdiff1d(np.flatnonzero(elpv.target == 3), errors), n_defective, replace=False)
    cells = np.array([*functional, *defective, *errors])
    labels = np.array([0] * n_functional + [1] * n_defective + [0] * n_errors)
    planted = np.arange(len(cells)) >= n_functional + n_defective
    order = rng.permutation(len(cells))  # ties in a ranking must not depend on where the planted cells are
    return cells[order].tolist(), labels[order], planted[order]


def ranking(y: np.ndarray, probs: np.ndarray, method: str) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return np.argsort(get_label_quality_scores(y, probs, method=method), kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-store", help="Store of the ELPV cells (made when missing).")
    parser.add_argument("--functional", type=int, default=150)
    parser.add_argument("--defective", type=int, default=150)
    parser.add_argument("--errors", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    features, elpv = elpv_features(args.base_store)
    cells, y, planted = planted_set(elpv, args.functional, args.defective, args.errors, args.seed)
    x = np.stack([features[Path(elpv.filenames[i]).name] for i in cells]).astype(np.float32)
    print(f"{len(y)} cells, {args.errors} planted errors; top k = {args.errors} and {3 * args.errors}")
    probs = {}
    for option in OPTIONS:
        start = time.perf_counter()
        if option == AUTO:  # choose_classifier's rule on the probabilities computed above
            best = max(CANDIDATES, key=lambda c: cv_score(y, probs[c]))
            probs[option], name = probs[best], f"auto -> {best}"
        elif "+" in option:
            probs[option], name = np.mean([probs[part] for part in option.split("+")], axis=0), option
        else:
            probs[option], name = out_of_fold(x, y, option, 5, args.seed, args.n_jobs), option
        found = []
        for method in METHODS:
            order = ranking(y, probs[option], method)
            found.append(f"{method} {int(planted[order[:args.errors]].sum()):2d} / {int(planted[order[:3 * args.errors]].sum()):2d}")
        print(f"{name:18s} CV balanced accuracy {cv_score(y, probs[option]):.3f}  planted in top {args.errors} / "
              f"{3 * args.errors}: {', '.join(found)}  ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"auto compares {', '.join(CANDIDATES)}; CPU count {os.cpu_count()}")


if __name__ == "__main__":
    main()
