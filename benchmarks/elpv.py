"""ELPV solar cells with frozen pretrained features, under the protocol of Deitsch et al. (Solar Energy 2019).

    FEATX_CACHE=/tmp/elpv-cache python benchmarks/elpv.py [--seeds 0,1,2] [--configs NAME,...] [--quick]
    FEATX_CACHE=/tmp/elpv-cache python benchmarks/elpv.py --finetune [--epochs 11 --image-size 160 ...]

4 classes of defect probability (0, 1/3, 2/3, 1); stratified 75/25 splits by class and cell type, one per
seed. Each feature set is extracted once through featx's store (`PretrainedFeatures`; a rerun reads the
cache); configurations that use some of its stages take those columns. The classifier's C is chosen by
5-fold cross-validation on the training part only; the test part is used once, for the reported scores.
Prints, per configuration, mean ± std over seeds of the 4-class accuracy, the balanced accuracy, the
binary accuracy (defective if probability >= 0.5) and the CV accuracy, next to the paper's numbers.

`--compare`: per seed, `featx.compare` on the same split (the test part given as a CSV): EfficientNet-Lite0/1/2
(`--models`) frozen at 300 px, GeM-pooled late stages, with and without the 8 symmetries, plus the `--finetuned`
backbones (Lite0 by default) fine-tuned on each seed's training part with `featx finetune`'s defaults (at their own
size; trained into `--out` when missing, reused after), an RBF SVM each, and the fusions of the `--fuse` best; the
winner is chosen by CV alone, then scored once on the test part. Prints each seed's leaderboard and the winners' mean.
`--folds 5`: each fine-tuned network's 5 fold networks too (`featx finetune --folds`, 12-14 min each on 2 cores),
so that compare cross-validates on every training image (cross-fitted) instead of the validation part only.

`--finetune`: per seed, `featx.finetune` on the training part only (its own stratified validation part picks
the epoch), then four rows on the test part: the fine-tuned head, with and without the 8-symmetry average,
and an RBF SVM on the fine-tuned features (C by 5-fold CV on the training part), with and without it.
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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
from featx.classify._classifiers import RBFGram
from featx.datasets import ELPV_PAPER as PAPER
from featx.datasets import load_elpv

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
    model: str = "efficientnet_lite0"  # Lite1 and Lite2 name their stages as Lite0 does

    def transformer(self) -> PretrainedFeatures:
        return PretrainedFeatures(self.model, image_size=self.image_size, pooling=self.pooling, layer=",".join(self.stages))


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
LITE = {n: FeatureSet(pooling="gem", model=f"efficientnet_lite{n}") for n in (1, 2)}  # 300 px, like NATIVE
LITE_D4 = {n: FeatureSet(pooling="gem", model=f"efficientnet_lite{n}", views=True) for n in (1, 2)}

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
    *(Config(f"300-gem-late-lite{n}", LITE[n], LATE) for n in (1, 2)),
    Config("300-gem-late-lite0+1+2", (NATIVE["gem"], LITE[1], LITE[2]), LATE),
    *(Config(f"300-gem-late-d4mean-lite{n}", LITE_D4[n], LATE, views="mean") for n in (1, 2)),
    Config("300-gem-late-d4mean-lite0+1+2", (NATIVE_D4, LITE_D4[1], LITE_D4[2]), LATE, views="mean"),
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


def normalisation(config: Config, seed: int) -> list:
    return {
        "standard": [StandardScaler()],
        "sqrt-l2": [FunctionTransformer(signed_sqrt), Normalizer(), StandardScaler()],
        "pca-white": [StandardScaler(), PCA(0.95, whiten=True, random_state=seed)],
    }[config.normalise]


def classifier(config: Config, seed: int) -> GridSearchCV:
    """Normalisation + classifier, C by stratified 5-fold CV (on whatever training data it is given). The RBF
    SVM runs on precomputed kernels, as `featx fit` chooses C (featx.classify._classifiers.RBFGram: same scores)."""
    last = [RBFGram(), SVC(kernel="precomputed")] if config.clf == "svm" else [LogisticRegression(max_iter=3000)]
    pipe: Pipeline = make_pipeline(*normalisation(config, seed), *last)
    grid = {f"{pipe.steps[-1][0]}__C": C_GRID if config.clf == "svm" else [0.001, 0.01, 0.1]}
    return GridSearchCV(pipe, grid, cv=StratifiedKFold(5, shuffle=True, random_state=seed), n_jobs=1)


def evaluate(config: Config, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> dict:
    """Scores of one configuration on one split; selection sees the training part only."""
    search = classifier(config, seed)
    if config.views == "train":  # C chosen on the D4-averaged training features, then one fit on all 8 views
        search.fit(X[train].mean(1), y[train])
        plain = make_pipeline(*normalisation(config, seed), SVC(kernel="rbf", C=search.best_params_["svc__C"]))
        model = plain.fit(X[train].reshape(-1, X.shape[-1]), np.repeat(y[train], 8))  # no 8x-sized kernel
        n_test = len(test)
        decisions = model.decision_function(X[test].reshape(-1, X.shape[-1])).reshape(n_test, 8, -1).mean(1)
        predicted = model.classes_[decisions.argmax(1)]
    else:
        features = X.mean(1) if config.views == "mean" else X
        search.fit(features[train], y[train])
        predicted = search.predict(features[test])
    return {**scores(y[test], predicted), "cv": search.best_score_}


def scores(y_true: np.ndarray, predicted: np.ndarray) -> dict:
    return {
        "accuracy": accuracy_score(y_true, predicted),
        "balanced": balanced_accuracy_score(y_true, predicted),
        "binary": accuracy_score(y_true >= 2, predicted >= 2),  # probability >= 0.5: classes 2 and 3
    }


def finetune_rows(filenames: np.ndarray, y: np.ndarray, classes: list[str], train: np.ndarray, test: np.ndarray,
                  seed: int, folder: Path, options: dict) -> dict[str, dict]:
    """Fine-tune on the training part (a CSV of path,class), then score the head and an SVM on its features."""
    from featx.finetuning._apply import load_finetuned
    from featx.finetuning._train import FinetuneConfig, finetune

    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / f"train-{seed}.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows([filenames[i], classes[y[i]]] for i in train)
    out = folder / f"lite0-seed{seed}.safetensors"
    config = asdict(FinetuneConfig(**{**options, "seed": seed}))
    defaults = asdict(FinetuneConfig())  # fields newer than the file: it was trained with their defaults
    if out.is_file() and {**defaults, **load_finetuned(out).metadata["config"]} == config:  # trained before: reused
        model = load_finetuned(out)
        history, best_epoch = model.metadata["history"], model.metadata["best_epoch"]
    else:
        result = finetune(listing, out=out, resume=True, **config)
        model, history, best_epoch = load_finetuned(result.path), result.history, result.best_epoch
    seconds = sum(r["seconds"] for r in history)  # each epoch's own time, also those of a resumed run
    epochs = len(history)
    print(f"seed {seed}: {epochs} epochs in {seconds:.0f} s ({seconds / epochs:.0f} s per epoch), kept epoch "
          f"{best_epoch}; validation accuracy {[round(r['val_accuracy'], 4) for r in history]}", flush=True)
    index = np.array([classes.index(c) for c in model.classes])  # the model's class order -> ELPV labels
    rows = {}
    for tta in ("none", "d4"):
        probabilities, found, failures = model.probabilities(list(filenames[test]), tta=tta, progress=False)
        assert found.all(), failures
        head = f"fine-tuned head{' + d4' if tta == 'd4' else ''}"
        rows[head] = scores(y[test], index[probabilities.argmax(1)])
        features = PretrainedFeatures(weights=out, image_size=model.metadata["image_size"], tta=tta)
        X = features.fit_transform(filenames)
        search = classifier(Config("svm", CROP224), seed).fit(X[train], y[train])
        svm = f"SVM on fine-tuned features{' + d4' if tta == 'd4' else ''}"
        rows[svm] = {**scores(y[test], search.predict(X[test])), "cv": search.best_score_}
        for name in (head, svm):
            rows[name].update(epochs=epochs, seconds_per_epoch=seconds / epochs)
            print(f"seed {seed}: {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items()), flush=True)
    return rows


def record_validation_part(tuned: Path, train_csv: Path) -> None:
    """A file fine-tuned before featx recorded its validation part (`validated_on`): that part drawn again by the
    same split code from the same images (their data hash checked), written into its metadata, so that compare
    cross-validates on it. The file's hash, hence its feature stores, change: they are extracted once more."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from featx.finetuning._data import TrainingImages
    from featx.images._content import content_keys
    from featx.images._inputs import find_images
    from featx.outputs import atomic_path

    with safe_open(str(tuned), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    recorded = json.loads(metadata["featx"])
    if "validated_on" in recorded:
        return
    images = find_images(train_csv)
    keys = [hashed.key for hashed in content_keys(images.paths)]
    pool = TrainingImages(list(images.paths), keys, images.labels, list(images.classes), None, None, None)
    pool.split(recorded["config"]["val_size"], recorded["config"]["seed"])
    # the data hash is of the sorted keys: the order, on which the split depends, is checked by the head's accuracy
    # on the part drawn again, equal to the recorded best epoch's (0.8339 on seed 0, checked once by hand)
    assert pool.data_hash() == recorded["data_hash"] and len(pool.val) == recorded["n_val"], tuned
    recorded["validated_on"] = pool.validated_keys()
    with atomic_path(tuned) as tmp:
        save_file(tensors, str(tmp), metadata={**metadata, "featx": json.dumps(recorded)})
    print(f"{tuned}: its validation part ({len(recorded['validated_on'])} images) recorded", flush=True)


def compare_rows(filenames: np.ndarray, y: np.ndarray, classes: list[str], strata: np.ndarray, seeds: list[int],
                 folder: Path, fuse: int, quick: bool, models: list[str], scoring: str, folds: int = 0,
                 finetuned: tuple[str, ...] = ("efficientnet_lite0",)) -> None:
    """featx.compare per seed on the benchmark's split; each leaderboard, then the winners' test scores."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "elpv.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(zip(filenames, (classes[label] for label in y)))
    candidates = {"models": ["efficientnet_lite0"] if quick else models,
                  "image_sizes": [64 if quick else 300], "layers": [",".join(LATE)], "poolings": ["gem"],
                  "ttas": ["none"] if quick else ["none", "d4"], "clfs": ["svm"]}
    winners, board = [], {}
    for seed in seeds:
        train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=strata, random_state=seed)
        test_csv, train_csv = folder / f"test-{seed}.csv", folder / f"train-{seed}.csv"
        for part, listing in ((test, test_csv), (train, train_csv)):
            with open(listing, "w", newline="") as f:
                csv.writer(f).writerows([filenames[i], classes[y[i]]] for i in part)
        weights = []
        for model in finetuned:  # featx finetune's defaults, on the training part only
            tuned = folder / f"{model.removeprefix('efficientnet_')}-seed{seed}.safetensors"
            if tuned.is_file():
                record_validation_part(tuned, train_csv)
            if (folds or not tuned.is_file()) and not quick:  # a network trained before is kept, as each fold network
                started = time.perf_counter()
                result = featx.finetune(train_csv, model=model, out=tuned, seed=seed, folds=folds, resume=True,
                                        progress=False, log=print)
                print(f"seed {seed}: {model} fine-tuned in {time.perf_counter() - started:.0f} s, kept epoch "
                      f"{result.best_epoch}", flush=True)
            weights += [tuned] if tuned.is_file() else []
        members = "" if finetuned == ("efficientnet_lite0",) else "-finetuned-" + "+".join(
            model.removeprefix("efficientnet_") for model in finetuned)  # the first runs' folders keep their names
        result = featx.compare(data, **candidates, weights=weights, fuse=fuse, split_csv=test_csv, seed=seed, n_jobs=-1,
                               scoring=scoring, progress=False,
                               out=folder / f"compare-seed{seed}-{scoring}{'-folds' if folds else ''}{members}")
        print(f"seed {seed}:\n{result.table()}", flush=True)
        winners.append((result.winner.candidate, result.test_accuracy, result.test_balanced_accuracy, result.winner.cv_mean))
        for rank, row in enumerate(result.rows, 1):  # each seed's fine-tuned file under one name
            board.setdefault(row.candidate.replace(f"-seed{seed}.", "-seedN."), []).append((rank, row))
    accuracy = 100 * np.array([w[1] for w in winners])
    print(f"\nevery candidate over the seeds (CV {scoring} chooses; test figures for the record):")
    print(f"| candidate | mean rank | CV {scoring} | test accuracy | test balanced accuracy |\n|---|---|---|---|---|")
    for name, rows in sorted(board.items(), key=lambda item: np.mean([rank for rank, _ in item[1]])):
        values = {k: 100 * np.array([getattr(row, k) for _, row in rows], dtype=float)
                  for k in ("cv_mean", "test_accuracy", "test_balanced_accuracy")}
        print(f"| {name} | {np.mean([rank for rank, _ in rows]):.1f} | "
              + " | ".join(f"{v.mean():.2f} ± {v.std():.2f}" for v in values.values()) + " |")
    print(f"\nwinners (chosen by CV): {[w[0] for w in winners]}")
    print(f"| featx compare winner | {accuracy.mean():.2f} ± {accuracy.std():.2f} | "
          f"{100 * np.mean([w[2] for w in winners]):.2f} | | {100 * np.mean([w[3] for w in winners]):.2f} (CV {scoring}) |")
    for name, value in PAPER.items():
        print(f"| {name} (paper) | {value:.2f} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated split seeds.")
    parser.add_argument("--configs", help="Comma-separated configuration names (default: all).")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 160 images, one seed.")
    parser.add_argument("--finetune", action="store_true", help="Fine-tuning rows instead of frozen features.")
    parser.add_argument("--out", default="elpv-finetune", help="--finetune: folder of the weights and checkpoints.")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="--finetune: a FinetuneConfig field, e.g. epochs=11 image_size=160 (repeatable).")
    parser.add_argument("--compare", action="store_true", help="featx.compare per seed (see above).")
    parser.add_argument("--fuse", type=int, default=3, help="--compare: fuse the K best feature spaces.")
    parser.add_argument("--folds", type=int, default=0, help="--compare: cross-fit the fine-tuned network (K fold "
                                                             "networks; 0: CV on its validation part only).")
    parser.add_argument("--scoring", default="accuracy", choices=("accuracy", "balanced_accuracy"),
                        help="--compare: what CV chooses by (the paper reports accuracy).")
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2",
                        help="--compare: the frozen backbones compared (a rerun with more extracts only the new ones).")
    parser.add_argument("--finetuned", default="efficientnet_lite0",
                        help="--compare: the backbones fine-tuned on each seed's training part (file <name>-seedN).")
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
    if args.finetune:
        options = {k: _parse(v) for k, v in (o.split("=", 1) for o in args.option)}
        print(f"fine-tuning with {options}", flush=True)
        per_seed = []
        for seed in seeds:
            train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=strata, random_state=seed)
            per_seed.append(finetune_rows(filenames, y, data.target_names, train, test, seed, Path(args.out), options))
        print(f"\n{len(y)} images, seeds {seeds}, total {time.perf_counter() - start:.0f} s\n")
        print("| configuration | 4-class accuracy | balanced accuracy | binary accuracy | CV accuracy (train) | epochs | s/epoch |")
        print("|---|---|---|---|---|---|---|")
        for name in per_seed[0]:
            values = {k: np.array([rows[name].get(k, np.nan) for rows in per_seed])
                      for k in ("accuracy", "balanced", "binary", "cv")}
            runs = [rows[name] for rows in per_seed]
            print(row(name, {k: 100 * v for k, v in values.items()})
                  + f" {np.mean([r['epochs'] for r in runs]):.1f} | {np.mean([r['seconds_per_epoch'] for r in runs]):.0f} |")
        return
    if args.compare:
        compare_rows(filenames, y, data.target_names, strata, seeds, Path(args.out), args.fuse, args.quick,
                     args.models.split(","), args.scoring, args.folds, tuple(args.finetuned.split(",")))
        return
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
        results = []
        for seed in seeds:
            train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=strata, random_state=seed)
            results.append(evaluate(config, X, y, train, test, seed))
        rows.append((config.name, {k: 100 * np.array([r[k] for r in results]) for k in results[0]}))
        print(row(*rows[-1]), flush=True)
    print(f"\n{len(y)} images, seeds {seeds}, total {time.perf_counter() - start:.0f} s\n")
    print("| configuration | 4-class accuracy | balanced accuracy | binary accuracy | CV accuracy (train) |")
    print("|---|---|---|---|---|")
    for name, values in rows:
        print(row(name, values))
    for name, value in PAPER.items():
        print(f"| {name} (paper) | {value:.2f} | | | |")


def _parse(value: str):
    """A --option value: int, float, None or text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return None if value == "None" else value


def row(name: str, values: dict[str, np.ndarray]) -> str:
    cells = " | ".join(f"{v.mean():.2f} ± {v.std():.2f}" for v in values.values())
    return f"| {name} | {cells} |"


if __name__ == "__main__":
    main()
