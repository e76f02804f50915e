"""Classifiers on cached features: featx fit / evaluate / predict, end to end on real ELPV images."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_space
from featx.cli.evaluate import evaluate
from featx.cli.fit import fit
from featx.cli.predict import predict
from html_checks import embedded_images, gallery, no_external_url, parse_html

from featx.classify._bundle import load_bundle
from featx.classify._classifiers import CLASSIFIERS, class_scores
from featx.classify._fitting import fit as train
from featx.errors import (BadInputError, FeatureSpaceMismatchError, FeatxError, ParameterError, StoreWarning,
                          UnsafeLoadWarning)
from featx.features._store import FeatureStore
from featx.images._content import KEY_LENGTH
from featx.names import MAX_SEED

PER_CLASS, HELD_OUT = 40, 8


@pytest.fixture(scope="module")
def elpv(tmp_path_factory) -> dict[str, Path]:
    """ELPV images extracted once with the default backbone: `store` (40 per class, in `cache`) and a
    `heldout` folder of 8 other images per class (not extracted)."""
    from featx.datasets import write_elpv_folder
    from featx.features._extraction import extract

    root = tmp_path_factory.mktemp("classify")
    train_folder = write_elpv_folder(root / "train", per_class=PER_CLASS + HELD_OUT)
    for class_folder in train_folder.iterdir():
        (root / "heldout" / class_folder.name).mkdir(parents=True)
        for image in sorted(class_folder.iterdir())[PER_CLASS:]:
            shutil.move(image, root / "heldout" / class_folder.name / image.name)
    report = extract(train_folder, store=root / "cache" / "elpv.h5", progress=False)
    assert report.n_failed == 0 and report.n_extracted == 4 * PER_CLASS
    return {"store": report.store, "cache": root / "cache", "heldout": root / "heldout", "root": root}


@pytest.fixture(scope="module")
def model(elpv) -> Path:
    """A logistic-regression bundle trained on the store (skops)."""
    bundle, _ = train(elpv["store"], "logreg")
    return bundle.save(elpv["root"] / "logreg.skops")


def synthetic_store(path: Path, labels: list[int], classes: list[str], space=None) -> Path:
    """A small store of random features, without running a network."""
    space = space or synthetic_space()
    features = np.random.default_rng(0).normal(size=(len(labels), 8)).astype(np.float32)
    with FeatureStore.create_or_open(path, space) as store:
        store.commit(
            keys=[f"{i:0{KEY_LENGTH}d}" for i in range(len(labels))], features=features,
            files=[(f"img{i}.png", i, label) for i, label in enumerate(labels)], classes=classes,
        )
    return path


def store_beside(elpv, folder: Path, keep) -> Path:
    """The module's store copied into folder/cache with its images linked into folder/train, those `keep(class
    name, index in the class folder)` picks only: the others are files gone since extraction, which fit leaves
    out (the store's paths are relative to it, so the copy names the links)."""
    import os

    (folder / "cache").mkdir(parents=True)
    store = Path(shutil.copy(elpv["store"], folder / "cache" / "elpv.h5"))
    for class_folder in sorted((elpv["root"] / "train").iterdir()):
        (folder / "train" / class_folder.name).mkdir(parents=True)
        for i, image in enumerate(sorted(class_folder.iterdir())):
            if keep(class_folder.name, i):
                os.symlink(image, folder / "train" / class_folder.name / image.name)
    return store


@pytest.mark.parametrize("clf", list(CLASSIFIERS))
def test_each_classifier_beats_majority_class(elpv, clf, monkeypatch):
    if CLASSIFIERS[clf].streaming:  # sgd reads the store in blocks, never all at once
        for method in ("load", "rows"):
            monkeypatch.setattr(FeatureStore, method, lambda *args: pytest.fail(f"sgd called FeatureStore.{method}"))
    weight = None if clf == "knn" else "balanced"  # neighbours have no class weights (refused: test_trust)
    bundle, report = train(elpv["store"], clf, class_weight=weight, block_rows=32)
    m = report.metrics
    assert m["n"] == report.details["n_test"] == 32 and report.details["n_train"] == 128
    assert m["accuracy"] >= m["majority_rate"] + 0.1, report.table()
    searched = [row["value"] for row in report.details["cv_scores"]]
    assert searched == list(CLASSIFIERS[clf].grid if clf == "sgd" else CLASSIFIERS[clf].usable_grid(128 * 4 // 5))
    # the value kept is the one of the best CV mean (sgd picks it itself, from its streamed folds)
    means = [row["mean"] for row in report.details["cv_scores"]]
    kept = {CLASSIFIERS[clf].param: searched[int(np.argmax(means))]}
    assert len(set(means)) > 1 and report.details["hyperparameters"] == bundle.info["hyperparameters"] == kept
    assert bundle.classes == ["defective", "functional", "likely_defective", "possibly_defective"]
    assert set(m["per_class"]) == set(bundle.classes)
    monkeypatch.undo()
    outcomes = report.outcomes  # the report's test rows: the saved pipeline's own predictions and scores
    with FeatureStore.open(elpv["store"]) as store:
        x, found = store.features_for(outcomes.paths)
    assert found.all() and len(outcomes.paths) == m["n"]
    scores, kind = class_scores(bundle.pipeline, x)
    assert (outcomes.predicted == bundle.pipeline.predict(x)).all() and outcomes.score_kind == kind
    assert np.allclose(outcomes.score, scores[np.arange(len(x)), outcomes.predicted], rtol=1e-4, atol=1e-5)


def test_streamed_sgd_scales_each_fold_model_on_the_rows_it_learns_from(elpv, monkeypatch):
    """Honest CV: each fold's scaler learns its mean and variance from exactly the rows its models train on, so
    no held-out row shapes the model that scores it (one scaler over the whole training part leaked them)."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    fitted, scaled, trained = {}, {}, {}  # scaler -> raw rows; scaled row -> (scaler, raw row); scaler -> raw rows
    partial_fit, transform, sgd_partial_fit = StandardScaler.partial_fit, StandardScaler.transform, SGDClassifier.partial_fit

    def spy_partial_fit(self, x, *args, **kwargs):
        fitted.setdefault(id(self), set()).update(row.tobytes() for row in x)
        return partial_fit(self, x, *args, **kwargs)

    def spy_transform(self, x, *args, **kwargs):
        out = transform(self, x, *args, **kwargs)
        scaled.update((after.tobytes(), (id(self), before.tobytes())) for before, after in zip(x, out))
        return out

    def spy_sgd(self, x, *args, **kwargs):
        for row in x:
            scaler, raw = scaled[row.tobytes()]
            trained.setdefault(scaler, set()).add(raw)
        return sgd_partial_fit(self, x, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "partial_fit", spy_partial_fit)
    monkeypatch.setattr(StandardScaler, "transform", spy_transform)
    monkeypatch.setattr(SGDClassifier, "partial_fit", spy_sgd)
    train(elpv["store"], "sgd", block_rows=32, cv=5, epochs=1)
    assert len(trained) == 6  # the 5 folds' models and the final one, each grid value on its fold's scaler
    for scaler, learned in trained.items():
        assert fitted[scaler] == learned
    assert len({len(learned) for learned in trained.values()}) > 1  # the final model learns from more rows


def test_fit_without_arguments_uses_the_store_and_writes_report(elpv, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(elpv["cache"]))
    out = tmp_path / "m.skops"
    result = CliRunner().invoke(fit, ["-o", str(out), "--tsne"])
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.output and "possibly_defective" in result.output
    saved = json.loads((tmp_path / "m.skops.json").read_text())
    assert saved["classifier"] == "logreg" and "C" in saved["hyperparameters"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(saved["metrics"])
    assert len(saved["cv_scores"]) == len(CLASSIFIERS["logreg"].grid)
    for name in ("m.skops-confusion.png", "m.skops-pca.png", "m.skops-tsne.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    bundle = load_bundle(out)
    with FeatureStore.open(elpv["store"]) as store:
        assert bundle.space == store.space and bundle.dtype == store.dtype


def checked_page(path: Path):
    """The parsed HTML report at `path`, after the checks every report passes: strict HTML5, every embedded
    image decodes, no external URL, every link a relative path to an existing file."""
    from urllib.parse import unquote

    text = path.read_text(encoding="utf-8")
    document = parse_html(text)
    assert embedded_images(document) and no_external_url(text)
    for a in document.iter("a"):
        assert (path.parent / unquote(a.get("href"))).is_file(), a.get("href")
    return document


def test_fit_report_shows_exactly_the_misclassified_test_rows(elpv, tmp_path):
    """Recomputed here from the store and the saved model: the test split (stratified, seed 0, 20%), the rows the
    model gets wrong on it, and the probability of each wrong class."""
    from sklearn.model_selection import train_test_split

    out = tmp_path / "m.skops"
    result = CliRunner().invoke(fit, ["--features", str(elpv["store"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"report: {tmp_path / 'm.skops.html'}"
    document = checked_page(tmp_path / "m.skops.html")
    bundle = load_bundle(out)
    with FeatureStore.open(elpv["store"]) as store:
        files, names = store.files(), store.classes()
        path_of_row = {row: path for path, (row, _) in files.items()}
        rows = np.array(sorted(path_of_row))
        labels = np.array([bundle.classes.index(names[files[path_of_row[r]][1]]) for r in rows])
        test = np.sort(train_test_split(np.arange(len(rows)), test_size=0.2, stratify=labels, random_state=0)[1])
        probability = bundle.pipeline.predict_proba(store.rows(rows[test]))
    predicted = probability.argmax(1)
    wrong = np.flatnonzero(predicted != labels[test])
    wrong = wrong[np.argsort(-probability[wrong, predicted[wrong]])]
    expected = [
        (Path(path_of_row[rows[test[i]]]).name, [f"true: {bundle.classes[labels[test[i]]]}",
         f"predicted: {bundle.classes[predicted[i]]}", f"probability: {probability[i, predicted[i]]:.3f}"])
        for i in wrong
    ]
    assert len(expected) >= 3  # 40 per class: the logistic regression makes mistakes to show
    assert gallery(document, "Mistakes") == expected
    confusion = np.array(json.loads((tmp_path / "m.skops.json").read_text())["metrics"]["confusion_matrix"])
    assert confusion.sum() - np.trace(confusion) == len(expected)
    for name in bundle.classes:
        shown = gallery(document, f"Correct: {name}")
        assert shown and all(lines[:2] == [f"true: {name}", f"predicted: {name}"] for _, lines in shown)


def test_fit_report_lists_the_unreadable_files_of_its_store(tmp_path):
    store = synthetic_store(tmp_path / "s.h5", [0, 1] * 10, ["a", "b"])
    with FeatureStore.open(store) as opened:
        space = opened.space
    with FeatureStore.create_or_open(store, space) as opened:
        opened.commit(failed=[(str(tmp_path / "bad <1>.png"), "0" * KEY_LENGTH, "not an image (Pillow cannot identify the format)")])
    _, report = train(store, "logreg")
    page = report.save(tmp_path / "r")[0]
    document = parse_html(page.read_text())
    failed = [section for section in document.iter("section") if section.find("h2").text.startswith("Files that could not be read (1)")]
    assert [td.text or td.find("a").text for td in failed[0].iter("td")] == [
        str(tmp_path / "bad <1>.png"), "not an image (Pillow cannot identify the format)"
    ]


@pytest.mark.parametrize("clf", ["logreg", "sgd"])
def test_fit_leaves_out_rows_that_hold_nan_or_infinity_naming_them(tmp_path, clf):
    """Rows a full disk damaged under an earlier version (featx info --check finds them) made fit raise
    scikit-learn's "Input X contains NaN" with a traceback."""
    import h5py

    store = synthetic_store(tmp_path / "s.h5", [0, 1] * 12, ["a", "b"])
    with h5py.File(store, "r+") as h5:
        h5["features"][3, 2], h5["features"][8, 0] = np.nan, np.inf
    with pytest.warns(StoreWarning, match=r"the features of 2 file\(s\) in .*s\.h5 hold NaN or infinity \(img3\.png "
                                          r"\.\.\.\): featx info --check --repair .*; left out"):
        bundle, report = train(store, clf, cv=2, test_size=0.25)
    assert report.details["n_train"] + report.details["n_test"] == 22
    assert "img3.png" not in report.outcomes.paths and "img8.png" not in report.outcomes.paths


def test_evaluate_and_predict_on_new_images(elpv, model, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(elpv["root"] / "eval-cache"))
    runner = CliRunner()
    result = runner.invoke(evaluate, [str(model), str(elpv["heldout"]), "--report", str(tmp_path / "ev"), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev.json").read_text())["metrics"]
    assert metrics["n"] == 4 * HELD_OUT and metrics["accuracy"] > metrics["majority_rate"]
    assert (tmp_path / "ev-confusion.png").exists()

    images = shutil.copytree(elpv["heldout"], tmp_path / "images")
    (images / "functional" / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(evaluate, [str(model), str(images), "--report", str(tmp_path / "ev2"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"report: {tmp_path / 'ev2.html'}"
    document = checked_page(tmp_path / "ev2.html")
    failed = next(s for s in document.iter("section") if s.find("h2").text.startswith("Files that could not be read (1)"))
    assert failed.find(".//a").text.endswith("broken.png")
    result = runner.invoke(predict, [str(model), str(images), "-q", "--report", str(tmp_path / "p.html")])
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.stderr and "1 of 33 files failed" in result.stderr
    assert f"report: {tmp_path / 'p.html'}" in result.stderr.splitlines()
    shown = gallery(checked_page(tmp_path / "p.html"), "Predictions")
    by_name = {Path(row[0]).name: row for row in csv.reader(io.StringIO(result.stdout))}
    scores = [max(float(v) for v in by_name[name][2:-1]) for name, _ in shown]
    assert len(shown) == 4 * HELD_OUT and scores == sorted(scores)
    assert all(lines == [f"predicted: {by_name[name][1]}", f"probability: {score:.3f}"]
               for (name, lines), score in zip(shown, scores))
    rows = list(csv.reader(io.StringIO(result.stdout)))
    bundle = load_bundle(model)
    assert rows[0] == ["path", "predicted", *(f"probability:{c}" for c in bundle.classes), "error"]
    assert len(rows) == 1 + 4 * HELD_OUT + 1 and rows[1 + HELD_OUT][0] == str(images / "functional" / "broken.png")
    assert rows.pop(1 + HELD_OUT)[1:] == ["", "", "", "", "", "not an image (Pillow cannot identify the format)"]
    probabilities = np.array([[float(v) for v in row[2:-1]] for row in rows[1:]])
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert all(row[1] == bundle.classes[int(np.argmax(p))] for row, p in zip(rows[1:], probabilities))
    out = tmp_path / "p.csv"
    assert runner.invoke(predict, [str(model), str(images / "defective"), "-q", "--out", str(out)]).exit_code == 0
    assert len(out.read_text().splitlines()) == 1 + HELD_OUT


def test_joblib_format_and_decision_scores(elpv, tmp_path):
    bundle, _ = train(elpv["store"], "linsvm")
    path = bundle.save(tmp_path / "m.joblib", "joblib")
    with pytest.raises(FeatxError, match="is a pickle, not a skops file.*only with --unsafe-pickle"):
        load_bundle(path)
    from featx.cli.info import info

    said = CliRunner().invoke(info, [str(path)])  # not "not a featx feature store"
    assert said.exit_code == 1 and "is a pickle, not a skops file" in said.output, said.output
    with pytest.warns(UnsafeLoadWarning, match="runs whatever code it holds"):
        loaded = load_bundle(path, unsafe_pickle=True)
    with FeatureStore.open(elpv["store"]) as store:
        x = store.rows(np.arange(10))
    assert (loaded.pipeline.predict(x) == bundle.pipeline.predict(x)).all()
    assert not hasattr(loaded.pipeline, "predict_proba")


def test_skops_refuses_foreign_types(tmp_path):
    from fractions import Fraction

    import skops.io

    path = tmp_path / "evil.skops"
    skops.io.dump({"format": "featx-model/1", "pipeline": Fraction(1, 3)}, path)
    with pytest.raises(FeatxError, match="refusing to load"):
        load_bundle(path)
    (tmp_path / "junk.skops").write_text("junk")
    with pytest.raises(FeatxError, match="is not a featx model .saved by featx fit.: not a skops file"):
        load_bundle(tmp_path / "junk.skops")
    (tmp_path / "cut.joblib").write_bytes(b"\x80\x04 cut short")
    with pytest.raises(FeatxError, match="cannot read model file"):
        load_bundle(tmp_path / "cut.joblib", unsafe_pickle=True)


def test_a_damaged_model_or_one_of_another_format_is_one_line(model, tmp_path):
    """A skops file whose state lacks a key, holds no JSON or names fewer classes than its pipeline has, and one
    of another featx format: one line each, not a KeyError, JSONDecodeError or IndexError later in predict."""
    import skops.io

    from featx.classify._bundle import _load_skops

    state = _load_skops(Path(model))
    damaged = {"no classes": {k: v for k, v in state.items() if k != "classes"}, "no json": {**state, "info": "{not json"},
               "one class": {**state, "classes": state["classes"][:1]}, "newer": {**state, "format": "featx-model/2"}}
    for name, broken in damaged.items():
        skops.io.dump(broken, tmp_path / f"{name}.skops")
        result = CliRunner().invoke(predict, [str(tmp_path / f"{name}.skops"), str(model), "-q"])
        said = "saved by another featx (featx-model/2" if name == "newer" else "is a damaged featx model"
        assert result.exit_code == 1 and said in result.output and "Traceback" not in result.output, (name, result.output)


def test_outputs_that_are_inputs_or_unloadable_are_refused_before_any_work(elpv, model, tmp_path, monkeypatch):
    """predict's CSV over the model's training store or over an image of its input folder; a joblib model named
    .skops (featx would never load it); a report file that is a folder; -j 0 and a negative seed."""
    import hashlib

    store, image = elpv["store"], next((elpv["heldout"] / "defective").iterdir())
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (store, image)}
    monkeypatch.setattr("featx.classify._fitting.samples", lambda *a: pytest.fail("trained before the checks"))
    (tmp_path / "m.skops-pca.png").mkdir()
    runs = {
        "predict over the training store": (predict, [str(model), str(elpv["heldout"]), "-o", str(store)], "it is the input"),
        "predict over an input image": (predict, [str(model), str(elpv["heldout"]), "-o", str(image)],
                                        "it is an image of the input folder"),
        "joblib named .skops": (fit, ["-f", str(store), "--format", "joblib", "-o", str(tmp_path / "j.skops")],
                                "featx never loads a pickle named .skops"),
        "a report file is a folder": (fit, ["-f", str(store), "-o", str(tmp_path / "m.skops")], "m.skops-pca.png: it is a folder"),
        "no jobs": (fit, ["-f", str(store), "-j", "0"], "0 runs nothing"),
        "negative seed": (fit, ["-f", str(store), "--seed", "-1"], "--seed"),
    }
    for name, (command, args, said) in runs.items():
        result = CliRunner().invoke(command, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code in (1, 2) and len(errors) == 1 and said in result.output, (name, result.output)
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.skops-pca.png"]
    with pytest.raises(ParameterError, match=f"between 0 and {MAX_SEED}, not {MAX_SEED + 1}"):
        train(store, seed=MAX_SEED + 1)  # the library's own check: one past scikit-learn's range


def test_evaluate_names_an_unknown_class_before_extracting_anything(elpv, model, tmp_path, monkeypatch):
    listing = tmp_path / "new.csv"
    cells = sorted(elpv["heldout"].rglob("*.png"))
    listing.write_text("".join(f"{cell},{'defectiv' if i == 0 else cell.parent.name}\n" for i, cell in enumerate(cells)))
    monkeypatch.setattr("featx.features._extraction.extract_aside", lambda *a, **k: pytest.fail("extracted first"))
    result = CliRunner().invoke(evaluate, [str(model), str(listing), "-q"])
    assert result.exit_code == 1 and f"{listing}: classes the model does not know: defectiv" in result.output, result.output


def test_feature_space_mismatch_and_unnamed_weights(model):
    bundle = load_bundle(model)
    with pytest.raises(FeatureSpaceMismatchError, match="pooling"):
        bundle.check_space(dataclasses.replace(bundle.space, pooling="max"))
    bundle.space = dataclasses.replace(bundle.space, weights="file:sha256:0123456789abcdef")
    with pytest.raises(FeatxError, match="--weights FILE"):
        bundle.extractor()


@pytest.mark.parametrize(
    "labels, classes, args, message",
    [
        ([-1] * 12, [], [], "no labelled images"),
        ([0] * 12, ["a"], [], "single class"),
        ([0] * 12 + [1] * 3, ["a", "b"], [], r"fewer than 6 images .*b \(3\)"),
        ([0] * 12 + [1] * 6, ["a", "b"], ["--test-size", "0.5"], "fewer training images than --cv"),
        ([0] * 12 + [1] * 2, ["a", "b"], ["--cv", "2"], r"fewer than 3 images .*b \(2\); add images$"),  # 2 is the least
        ([0] * 12 + [1] * 3, ["a", "b"], ["--cv", "2", "--test-size", "0.5"],
         r"b \(1\); add images or lower --test-size$"),
    ],
)
def test_unusable_stores_give_clear_messages(tmp_path, labels, classes, args, message):
    store = synthetic_store(tmp_path / "s.h5", labels, classes)
    options = dict(zip(args[::2], args[1::2]))
    with pytest.raises(BadInputError, match=message):
        train(store, test_size=float(options.get("--test-size", 0.2)), cv=int(options.get("--cv", 5)))
    result = CliRunner().invoke(fit, ["--features", str(store), "-o", str(tmp_path / "m.skops"), *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_several_stores_are_listed(private_cache):
    for name in ("a.h5", "b.h5"):
        synthetic_store(private_cache / name, [0, 1] * 10, ["x", "y"])
    result = CliRunner().invoke(fit, [])
    assert result.exit_code == 1
    assert "a.h5" in result.output and "b.h5" in result.output and "--features" in result.output
    assert "run featx extract first" in CliRunner().invoke(fit, [], env={"FEATX_CACHE": str(private_cache / "none")}).output


def test_empty_folder_and_unknown_classes(elpv, model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(evaluate, [str(model), str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no images found" in result.output
    result = CliRunner().invoke(predict, [str(model), str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no images found" in result.output
    (tmp_path / "other" / "cats").mkdir(parents=True)
    shutil.copy(next((elpv["heldout"] / "defective").iterdir()), tmp_path / "other" / "cats")
    result = CliRunner().invoke(evaluate, [str(model), str(tmp_path / "other"), "-q"])
    assert result.exit_code == 1 and "classes the model does not know: cats" in result.output
    (tmp_path / "broken" / "defective").mkdir(parents=True)
    (tmp_path / "broken" / "defective" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    result = CliRunner().invoke(evaluate, [str(model), str(tmp_path / "broken"), "-q"])
    assert result.exit_code == 1 and "none of the 1 labelled images could be read (" in result.output and "cut.png" in result.output


def test_predicting_never_adds_images_to_the_training_store(elpv, model, tmp_path, monkeypatch):
    """The training store is the default store of the model's feature space: predict must not write there."""
    monkeypatch.setenv("FEATX_CACHE", str(elpv["store"].parent))
    with FeatureStore.open(elpv["store"]) as opened:
        before = opened.files()
    result = CliRunner().invoke(predict, [str(model), str(elpv["heldout"]), "-q"])
    assert result.exit_code == 0, result.output
    with FeatureStore.open(elpv["store"]) as opened:
        assert opened.files() == before
    assert list((elpv["store"].parent / "apply").glob("*.h5"))


def test_identical_images_with_two_labels_are_refused(tmp_path):
    store = synthetic_store(tmp_path / "s.h5", [0, 1] * 10, ["a", "b"])
    with FeatureStore.open(store) as opened:
        space = opened.space
    with FeatureStore.create_or_open(store, space) as opened:
        opened.commit(files=[("copy_of_img0.png", 0, 1)])
    with pytest.raises(BadInputError, match="identical images carry different labels: .*img0.png"):
        train(store, "logreg")


def test_svm_selection_on_shared_kernels_scores_as_libsvm_rbf(elpv):
    """The svm's C is chosen on precomputed RBF kernels (RBFGram): the same CV scores as GridSearchCV over a
    plain RBF SVC, and the saved model is that plain SVC refitted with the chosen C."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    bundle, report = train(elpv["store"], "svm")
    with FeatureStore.open(elpv["store"]) as store:
        train_paths = sorted(set(store.files()) - set(report.outcomes.paths))
        x, _ = store.features_for(train_paths)
        labels = [bundle.classes.index(store.classes()[store.files()[p][1]]) for p in train_paths]
    plain = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("clf", SVC(gamma="scale", random_state=0))]),
        {"clf__C": list(CLASSIFIERS["svm"].grid)}, scoring="balanced_accuracy", cv=StratifiedKFold(5, shuffle=True, random_state=0),
    ).fit(x, labels)
    ours = [row["mean"] for row in report.details["cv_scores"]]
    np.testing.assert_allclose(ours, plain.cv_results_["mean_test_score"], atol=1e-9)
    svc = bundle.pipeline[-1]
    assert isinstance(svc, SVC) and svc.kernel == "rbf" and svc.C == plain.best_params_["clf__C"]
    assert (bundle.pipeline.predict(x) == plain.best_estimator_.predict(x)).all()


def test_grid_values_that_stop_before_converging_are_scored_quietly_and_the_chosen_fit_still_warns(elpv_folder):
    """linsvm capped at 3 iterations on real ELPV cells (16 x 16 grey pixels): no ConvergenceWarning from the
    grid search, one from fitting the chosen value."""
    import warnings

    from PIL import Image
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from featx.classify._fitting import search

    files = sorted(elpv_folder.glob("*/*.png"))
    x = np.array([np.asarray(Image.open(f).convert("L").resize((16, 16)), dtype=np.float32).ravel() for f in files])
    y = np.unique([f.parent.name for f in files], return_inverse=True)[1]
    capped = dataclasses.replace(CLASSIFIERS["linsvm"], make=lambda weights, seed: LinearSVC(dual=True, max_iter=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline, _, scores = search(x, y, capped, None, 2, 0, n_jobs=1)
    assert len(scores) == len(CLASSIFIERS["linsvm"].grid)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    with pytest.warns(ConvergenceWarning):
        pipeline.fit(x, y)


def test_platt_scaling_folds_mix_the_groups_that_files_come_in():
    """Rows come in file order, and files in groups (here ELPV's monocrystalline cells, then the polycrystalline
    ones): inner folds in that order held out one group at a time, and an SVM's sigmoid then gave one class to
    every test cell (docs/benchmarks.md); shuffled, each fold holds both groups."""
    from sklearn.svm import SVC

    from featx.classify._classifiers import platt_scaled
    from featx.datasets import load_elpv

    elpv = load_elpv()
    rows = np.flatnonzero(np.isin(elpv.target, (0, 3)))[::8]
    rows = rows[np.argsort(elpv.cell_type[rows] != "mono", kind="stable")]  # a folder of each type, mono first
    kinds, y = elpv.cell_type[rows], (elpv.target[rows] == 3).astype(int)
    calibrated = platt_scaled(SVC(), y, cv=5, seed=0)
    for _, held in calibrated.cv.split(np.zeros(len(y)), y):
        assert 0.2 < np.mean(kinds[held] == "mono") < 0.6  # 41% of all


def test_copies_under_other_names_are_one_sample_never_on_both_sides_of_the_split(elpv, tmp_path):
    """Copies of cells under other names, extracted into the store (no new row): fit's samples are the distinct
    contents, so a copy can never be trained on while its original is tested (an optimistic test score)."""
    from featx.classify._fitting import samples
    from featx.features._extraction import extract

    store = store_beside(elpv, tmp_path, lambda name, i: True)
    copied = sorted((tmp_path / "train").glob("*/*.png"))[::4]
    for image in copied:
        shutil.copy(image, image.with_name(f"copy of {image.name}"))
    assert extract(tmp_path / "train", store=store, progress=False).n_extracted == 0
    with FeatureStore.open(store) as opened:
        files = opened.present_files()
        copies = [path for path in files if Path(path).name.startswith("copy of ")]
        distinct = {row for row, _ in files.values()}
        assert len(copies) == len(copied) and len(files) == len(distinct) + len(copies)
        split = samples(opened, 5, 0.2, 0, None)
    assert len(split.train) + len(split.test) == len(distinct) == len(set(split.rows))
    assert not set(split.rows[split.train]) & set(split.rows[split.test])
    _, report = train(store, "logreg")
    assert report.details["n_train"] + report.details["n_test"] == len(distinct)
    assert len({files[path][0] for path in report.outcomes.paths}) == report.details["n_test"]


@pytest.mark.parametrize("clf", ["logreg", "sgd"])
def test_balanced_class_weights_favour_the_minority_classes(elpv, tmp_path, clf):
    """An imbalanced store (40 defective cells, 8 of each other class: the rest gone from disk): class_weight
    'balanced' gives each class of the training part the weight n / (k x its count), in memory and streamed."""
    from featx.classify._fitting import samples

    store = store_beside(elpv, tmp_path, lambda name, i: name == "defective" or i < 8)
    with FeatureStore.open(store) as opened, pytest.warns(StoreWarning, match="no longer on disk"):
        split = samples(opened, 5, 0.2, 0, None)
    counts = np.bincount(split.labels[split.train], minlength=len(split.classes))
    assert counts[0] > 3 * counts[1:].max()  # defective, the majority
    with pytest.warns(StoreWarning):
        bundle, _ = train(store, clf, class_weight="balanced", block_rows=32)
    weights = bundle.pipeline[-1].class_weight
    assert isinstance(weights, dict) and sorted(weights) == list(range(4))
    assert weights[0] < min(weights[1], weights[2], weights[3])
    np.testing.assert_allclose([weights[c] for c in range(4)], len(split.train) / (4 * counts))
    with pytest.warns(StoreWarning):
        assert train(store, clf, block_rows=32)[0].pipeline[-1].class_weight is None


def test_a_class_whose_files_are_all_gone_leaves_the_others_their_own_names(elpv, tmp_path):
    """The first class's folder deleted after extraction: the model's classes are the three left, each test file
    counted as the class of its folder (class names were taken by position: the first class came back)."""
    store = store_beside(elpv, tmp_path, lambda name, i: name != "defective")
    with pytest.warns(StoreWarning, match=f"{PER_CLASS} files no longer on disk"):
        bundle, report = train(store, "logreg")
    assert bundle.classes == ["functional", "likely_defective", "possibly_defective"] == report.classes
    outcomes = report.outcomes
    assert len(outcomes.paths) == report.details["n_test"] > 0
    assert [bundle.classes[t] for t in outcomes.true] == [Path(path).parent.name for path in outcomes.paths]


def test_evaluating_a_folder_of_one_class_counts_it_under_its_own_name(elpv, model, tmp_path, monkeypatch):
    """A folder of functional cells only: its images are functional for the model too (the folder's classes
    were matched to the model's by position, so they counted as defective)."""
    monkeypatch.setenv("FEATX_CACHE", str(elpv["root"] / "eval-cache"))
    shutil.copytree(elpv["heldout"] / "functional", tmp_path / "only" / "functional")
    report, _ = load_bundle(model).evaluate(tmp_path / "only", progress=False)
    support = {name: row["support"] for name, row in report.metrics["per_class"].items()}
    assert support == {name: HELD_OUT if name == "functional" else 0 for name in report.classes}
    assert report.metrics["absent_classes"] == ["defective", "likely_defective", "possibly_defective"]
    assert {report.classes[t] for t in report.outcomes.true} == {"functional"}


def test_store_rows_come_in_the_order_asked_and_predictions_in_the_files_order(elpv, model):
    """FeatureStore.rows in any order, with repeats, is the rows read one by one; predict on training files in
    the reverse of their row order gives each file the probabilities of its own features."""
    with FeatureStore.open(elpv["store"]) as store:
        asked = [5, 0, 3, 0, 17]
        np.testing.assert_array_equal(store.rows(asked), np.vstack([store.rows([row]) for row in asked]))
        files, loaded = store.files(), store.load()
        paths = sorted(files, key=lambda path: files[path][0])[:12][::-1]  # rows 11 ... 0: reading sorts them
        x = loaded.features[[list(loaded.paths).index(path) for path in paths]]
    bundle = load_bundle(model)
    predictions, sources = bundle.predict(paths, progress=False)
    assert sources.n_read == len(paths) and predictions.paths == paths
    np.testing.assert_allclose(predictions.scores, bundle.pipeline.predict_proba(x), rtol=1e-5, atol=1e-7)
