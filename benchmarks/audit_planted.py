"""Ranking of planted label errors by the options `featx audit` has (docs/audit.md, "Which ranking finds planted
label errors best").

The set: --functional functional and --defective defective ELPV cells (defect probability 0 and 1; the
clearly defective cells of audit_elpv.clearly_defective left out), plus --errors clearly defective cells
filed as functional, drawn once per --seeds. For each classifier `featx audit --clf auto` compares, and for
"auto" (the one of the best CV balanced accuracy), the out-of-fold probabilities rank the images by cleanlab's
self-confidence, plain and "adjusted" (cleanlab's adjust_pred_probs: each class's mean self-confidence subtracted,
for class imbalance), as they are and after 1 and 2 rounds of prune-and-refit (`prune_and_refit`: the models are
refitted without cleanlab's likely errors); also the k-nearest-neighbour label disagreement (share of an image's
--k nearest neighbours, cosine on standardised features, with its own label), alone and averaged with auto's
self-confidence. Printed: per draw and mean, how many planted errors are in the top 1x and 3x the number planted.

Features come from a store of the ELPV cells (--base-store; made when missing with `featx extract` of the drawn
cells, linked into class folders beside it, in the feature space of --image-size, --pooling and --layer).

    python benchmarks/audit_planted.py [--base-store STORE] [--seeds 0,1,2,3,4] [--image-size 300 --pooling gem --layer blocks.5,blocks.6,bn2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import featx
from featx.auditing._labels import AUTO, CANDIDATES, choose_classifier, prune_and_refit
from featx.datasets import load_elpv

from audit_elpv import clearly_defective, link_folder  # noqa: E402  (benchmarks/ is the script's folder)


def elpv_features(base: str | None, elpv, cells, **space) -> dict[str, np.ndarray]:
    """File name -> feature vector of the ELPV `cells` (extracted into `base` when missing)."""
    store = Path(base) if base else Path(tempfile.mkdtemp(prefix="featx-planted-")) / "elpv.h5"
    root = store.parent / f"{store.stem}-cells"
    link_folder(root, {int(i): elpv.target_names[elpv.target[i]] for i in cells}, elpv.filenames)
    featx.extract(root, store=store, progress=False, **space)
    loaded = featx.load_features(store)
    return {Path(p).name: f for p, f in zip(loaded.paths, loaded.features)}


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


def knn_agreement(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Share of each image's k nearest neighbours (cosine on standardised features) that carry its label."""
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(x)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sims = z @ z.T
    np.fill_diagonal(sims, -np.inf)
    return (y[np.argsort(-sims, axis=1, kind="stable")[:, :k]] == y[:, None]).mean(axis=1)


def scores(x: np.ndarray, y: np.ndarray, seed: int, k: int, n_jobs: int) -> dict[str, np.ndarray]:
    """Option -> label quality of each image (lowest: most likely an error)."""
    from cleanlab.rank import get_label_quality_scores

    found, cv, final = {}, {}, {}
    for clf in CANDIDATES:
        choice = choose_classifier(x, y, clf, 5, seed, n_jobs)
        cv[clf] = choice.score
        for rounds in range(3):
            found[f"{clf} refit {rounds}"] = choice.probs[np.arange(len(y)), y]
            found[f"{clf} refit {rounds} adjusted"] = get_label_quality_scores(y, choice.probs, adjust_pred_probs=True)
            if rounds < 2:
                prune_and_refit(choice, x, y, 1, 5, seed, n_jobs)
        final[clf] = choice.probs
    mean = np.mean(list(final.values()), axis=0)  # each classifier refitted twice on its own, then averaged
    found["mean of the two, refit 2 adjusted"] = get_label_quality_scores(y, mean, adjust_pred_probs=True)
    best = max(CANDIDATES, key=lambda c: cv[c])  # choose_classifier's rule (ties: the first)
    found.update({f"{AUTO} refit {r}{a}": found[f"{best} refit {r}{a}"] for r in range(3) for a in ("", " adjusted")})
    found[f"knn {k}"] = knn_agreement(x, y, k)
    found[f"{AUTO} + knn {k}"] = (found[f"{AUTO} refit 0"] + found[f"knn {k}"]) / 2
    found[f"{AUTO} refit 2 + knn {k}"] = (found[f"{AUTO} refit 2"] + found[f"knn {k}"]) / 2
    print(f"  auto chose {best} ({', '.join(f'{c} {s:.3f}' for c, s in cv.items())})", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-store", help="Store of the ELPV cells (the drawn ones extracted into it when missing).")
    parser.add_argument("--functional", type=int, default=150)
    parser.add_argument("--defective", type=int, default=150)
    parser.add_argument("--errors", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="One draw (and CV shuffle) per seed.")
    parser.add_argument("--k", type=int, default=20, help="Neighbours of the kNN label agreement.")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--layer")
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    elpv, seeds = load_elpv(), [int(s) for s in args.seeds.split(",")]
    draws = {seed: planted_set(elpv, args.functional, args.defective, args.errors, seed) for seed in seeds}
    space = {"image_size": args.image_size, "pooling": args.pooling, "layer": args.layer}
    features = elpv_features(args.base_store, elpv, sorted({i for cells, _, _ in draws.values() for i in cells}), **space)
    table: dict[str, list[tuple[int, int]]] = {}
    for seed, (cells, y, planted) in draws.items():
        start = time.perf_counter()
        x = np.stack([features[Path(elpv.filenames[i]).name] for i in cells]).astype(np.float32)
        for option, quality in scores(x, y, seed, args.k, args.n_jobs).items():
            order = np.argsort(quality, kind="stable")
            table.setdefault(option, []).append((int(planted[order[: args.errors]].sum()), int(planted[order[: 3 * args.errors]].sum())))
        print(f"draw {seed}: {len(y)} cells, {args.errors} planted errors ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"planted errors in the top {args.errors} / {3 * args.errors}, per draw (seeds {args.seeds}), and mean")
    for option, found in table.items():
        means = np.mean(found, axis=0)
        print(f"{option:31s} {'  '.join(f'{a:2d}/{b:2d}' for a, b in found)}   mean {means[0]:.1f} / {means[1]:.1f}")


if __name__ == "__main__":
    main()
