"""`featx compare` (issue #27) on real ELPV cells: two cheap candidates (EfficientNet-Lite0 at 32 and 48 px), their
fusions, one split, a rerun from the stores, the saved winner through `featx predict`, and bad input."""
from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx.cli import main
from featx.comparing import _compare

SETTINGS = {"image_sizes": [32, 48], "clfs": ["logreg"], "fuse": 2, "cv": 2, "progress": False, "engine": "torch"}
SINGLES = ["efficientnet_lite0 32px avg / logreg", "efficientnet_lite0 48px avg / logreg"]


@pytest.fixture(scope="module")
def compared(elpv_folder, tmp_path_factory):
    """One comparison (cache and output folder of its own) and the cache it filled."""
    cache = tmp_path_factory.mktemp("compare-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEATX_CACHE", str(cache))
        patch.setenv("FEATX_OFFLINE", "1")
        lines = []
        comparison = featx.compare(elpv_folder, out=tmp_path_factory.mktemp("compared"), log=lines.append, **SETTINGS)
    return comparison, cache, lines


def names(comparison) -> list[str]:
    return [row.candidate for row in comparison.rows]


def training_listing(folder: Path, tmp_path: Path):
    """The split compare draws of `folder` (seed 0, 2 folds) and a CSV of its training part, to fine-tune on."""
    from featx.comparing._candidates import Split
    from featx.images._inputs import find_images

    split = Split.of(find_images(folder), test_size=0.25, seed=0, cv=2)
    listing = tmp_path / "train.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows([split.paths[i], split.classes[split.labels[i]]] for i in split.train)
    return split, listing


def test_leaderboard_lists_each_candidate_and_the_fusions_best_first(compared):
    comparison, _, lines = compared
    singles = [name for name in names(comparison) if name in SINGLES]
    fused = sorted(set(names(comparison)) - set(SINGLES))
    assert sorted(singles) == SINGLES and len(fused) == 2  # the fusions of the two spaces, best first inside
    assert fused[0] == "average(" + " + ".join(singles) + ")"
    assert fused[1] == "concat(" + " + ".join(name.removesuffix(" / logreg") for name in singles) + ") / logreg"
    means = [row.cv_mean for row in comparison.rows]
    assert means == sorted(means, reverse=True) and not any(row.error for row in comparison.rows)
    assert comparison.n_extracted == 2 * 20  # each space once: 20 cells
    # the cost of each space before it is extracted: the second from the rate the first measured
    costs = [line for line in lines if "to extract" in line]
    assert len(costs) == 2 and costs[0].startswith("  efficientnet_lite0 32px avg: 20 images x 1 view(s)")
    assert re.search(r"48px avg: 20 images x 1 view\(s\) to extract, about \d+ s at the rate measured so far", costs[1])
    assert [row.dim for row in comparison.rows if row.candidate in SINGLES] == [1280, 1280]
    out = comparison.model.parent
    saved = json.loads((out / "leaderboard.json").read_text())
    assert [row["candidate"] for row in saved["rows"]] == names(comparison)
    with open(out / "leaderboard.csv") as f:
        assert [row["candidate"] for row in csv.DictReader(f)] == names(comparison)
    page = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")
    # a fusion's members are the candidates it fuses: files keep their names, people see their ranks
    rank = {name: i for i, name in enumerate(names(comparison), 1)}
    fusions = [row for row in comparison.rows if row.members]
    assert len(fusions) == 2 and all(sorted(row.members) == sorted(singles) for row in fusions)
    assert {comparison.label(row) for row in fusions} == {
        f"{kind}(#{rank[fusions[0].members[0]]},#{rank[fusions[0].members[1]]}){end}"
        for kind, end in (("average", ""), ("concat", " / logreg"))}
    lines = comparison.table().splitlines()
    assert all(line[4:].startswith(comparison.label(row) + " ") for line, row in zip(lines[1:], comparison.rows))
    assert all(f"<td>{comparison.label(row)}</td>" in page for row in comparison.rows)
    assert [row["members"] for row in saved["rows"]] == [list(row.members) for row in comparison.rows]
    report = next(f for f in comparison.files if f.suffix == ".html" and f.name != "leaderboard.html").read_text()
    assert f"featx compare: #1 of leaderboard.html, {comparison.label(comparison.winner)}<" in report


def test_a_rerun_extracts_nothing(compared, elpv_folder, tmp_path, monkeypatch):
    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    again = featx.compare(elpv_folder, out=tmp_path / "again", **SETTINGS)
    assert again.n_extracted == 0
    assert [(r.candidate, r.cv_mean) for r in again.rows] == [(r.candidate, r.cv_mean) for r in comparison.rows]


def test_the_test_part_does_not_change_the_choice(compared, elpv_folder, tmp_path, monkeypatch):
    """The test part named by a CSV; its labels shuffled among its files: the same leaderboard."""
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    files = sorted(elpv_folder.glob("*/*.png"))
    test = files[::4]
    (tmp_path / "test.csv").write_text("".join(f"{p},{p.parent.name}\n" for p in test))
    boards = []
    for shuffle in (False, True):
        labels = {p: p.parent.name for p in files}
        if shuffle:
            labels.update(zip(test, [labels[p] for p in test[1:] + test[:1]]))
        data = tmp_path / f"data-{shuffle}.csv"
        data.write_text("".join(f"{p},{label}\n" for p, label in labels.items()))
        boards.append(featx.compare(data, split_csv=tmp_path / "test.csv", out=tmp_path / f"out-{shuffle}", **SETTINGS))
    chosen = [[(r.candidate, r.cv_mean, r.cv_std, r.dim, r.error) for r in board.rows] for board in boards]
    assert chosen[0] == chosen[1] and boards[0].n_test == boards[1].n_test == len(test)
    tested = [[(r.test_balanced_accuracy, r.test_accuracy) for r in board.rows] for board in boards]
    assert tested[0] != tested[1]  # the test columns are scored on the test labels, after the choice


def test_every_candidate_is_scored_on_the_test_part_after_the_choice(tmp_path, monkeypatch):
    """48 cells (12 test images: the candidates' test scores differ), each single candidate's test scores
    checked against a refit by hand on its store's features and the same split."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import cross_val_predict

    from featx.classify._classifiers import get_classifier
    from featx.classify._fitting import search
    from featx.comparing._candidates import Split
    from featx.datasets import write_elpv_folder
    from featx.images._inputs import find_images

    cells = write_elpv_folder(tmp_path / "cells", per_class=12)
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    comparison = featx.compare(cells, out=tmp_path / "out", **{**SETTINGS, "image_sizes": [32, 64]})
    assert all(r.test_accuracy is not None and 0 <= r.test_balanced_accuracy <= 1 for r in comparison.rows)
    winner = comparison.winner
    assert (winner.test_accuracy, winner.test_balanced_accuracy) == (comparison.test_accuracy, comparison.test_balanced_accuracy)
    assert comparison.table().splitlines()[0].split()[-4:] == ["test", "bal.", "test", "acc."]
    with open(tmp_path / "out" / "leaderboard.csv") as f:
        saved = {row["candidate"]: float(row["test_accuracy"]) for row in csv.DictReader(f)}
    assert saved == {r.candidate: r.test_accuracy for r in comparison.rows}
    split = Split.of(find_images(cells), 0.25, 0, cv=2)
    y, checked, members = split.labels, set(), []
    for row in comparison.rows:
        if " / " in row.candidate and "(" not in row.candidate:  # a single space
            x = featx.PretrainedFeatures(image_size=int(row.candidate.split()[1][:-2])).fit_transform(list(split.paths))
            pipeline = search(x[split.train], y[split.train], get_classifier("logreg"), None, split.folds(2, 0), 0)[0]
            predicted = pipeline.fit(x[split.train], y[split.train]).predict(x[split.test])
            assert row.test_accuracy == pytest.approx(accuracy_score(y[split.test], predicted))
            assert row.test_balanced_accuracy == pytest.approx(balanced_accuracy_score(y[split.test], predicted))
            checked.add(row.test_accuracy)
            members.append(cross_val_predict(pipeline, x[split.train], y[split.train], cv=split.folds(2, 0),
                                             method="predict_proba"))
    assert len(checked) == 2  # two candidates, two different test scores
    # the averaged fusion's CV: the members' out-of-fold probabilities averaged, scored per fold
    averaged = next(r for r in comparison.rows if r.candidate.startswith("average("))
    probability = (members[0] + members[1]) / 2
    folds = [balanced_accuracy_score(y[split.train][held], probability[held].argmax(1)) for _, held in split.folds(2, 0)]
    assert averaged.cv_mean == pytest.approx(np.mean(folds)) and averaged.cv_std == pytest.approx(np.std(folds))


def test_the_concatenation_is_cross_validated_on_each_space_standardised_and_weighted_by_its_width(
        compared, elpv_folder, monkeypatch):
    """The concat row's CV, rebuilt by hand from the stores' features on the same folds: each space standardised
    (its scale learned on the fold's training images) and weighted 1/sqrt(width), so a space of large raw values
    or many columns does not drown the other; the same features side by side as they are score otherwise."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from featx.classify._classifiers import CLASSIFIERS
    from featx.comparing._candidates import Split
    from featx.images._inputs import find_images

    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    concat = next(row for row in comparison.rows if row.candidate.startswith("concat("))
    sizes = re.findall(r"(\d+)px", concat.candidate)
    assert sorted(sizes) == ["32", "48"]  # in the order the concatenation put them: the best space first
    split = Split.of(find_images(elpv_folder), 0.25, 0, cv=2)
    spaces = [featx.PretrainedFeatures(image_size=int(size), engine="torch").fit_transform(list(split.paths))
              for size in sizes]
    edges = np.cumsum([0] + [x.shape[1] for x in spaces])
    blocks = {f"space{i}": list(range(a, b)) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))}
    scale = ColumnTransformer([(name, StandardScaler(), cols) for name, cols in blocks.items()],
                              transformer_weights={name: 1 / np.sqrt(len(cols)) for name, cols in blocks.items()})
    searched = GridSearchCV(Pipeline([("scale", scale), ("clf", LogisticRegression(max_iter=3000, random_state=0))]),
                            {"clf__C": list(CLASSIFIERS["logreg"].grid)}, scoring="balanced_accuracy",
                            cv=split.folds(2, 0)).fit(np.hstack(spaces)[split.train], split.labels[split.train])
    best = searched.best_index_
    assert concat.dim == edges[-1]
    assert concat.cv_mean == pytest.approx(searched.cv_results_["mean_test_score"][best])
    assert concat.cv_std == pytest.approx(searched.cv_results_["std_test_score"][best])


def test_scoring_accuracy_ranks_by_plain_accuracy(compared, elpv_folder, tmp_path, monkeypatch):
    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    plain = featx.compare(elpv_folder, out=tmp_path / "out", scoring="accuracy", **SETTINGS)
    assert plain.scoring == "accuracy" and "CV accuracy" in plain.table().splitlines()[0]
    assert {r.candidate for r in plain.rows} == {r.candidate for r in comparison.rows}
    assert [r.cv_mean for r in plain.rows] != [r.cv_mean for r in comparison.rows]
    result = CliRunner().invoke(main, ["compare", str(elpv_folder), "--image-size", "32,48", "--clf", "logreg", "--fuse", "2",
                                       "--cv", "2", "--engine", "torch", "-q", "--scoring", "accuracy",
                                       "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "CV accuracy" in result.stdout.splitlines()[0]
    ranked = [re.findall(r"^ *\d+  (.+?) +(\d\.\d{3} ± \d\.\d{3}) ", text, re.M) for text in (plain.table(), result.stdout)]
    assert len(ranked[0]) == 4 and ranked[0] == ranked[1]
    with pytest.raises(featx.errors.UnknownNameError, match="scoring"):
        featx.compare(elpv_folder, out=tmp_path / "bad", scoring="f1", **SETTINGS)


def predicted_probabilities(model: Path, data: Path) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(main, ["predict", str(model), str(data), "-q", "-w", "0"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    return {row["path"]: np.array([float(v) for k, v in row.items() if k.startswith("probability:")]) for row in rows}


def expected_probabilities(model: Path, data: Path) -> dict[str, np.ndarray]:
    """The bundle's pipeline on the features its stores hold, side by side, in Python."""
    bundle = featx.classify.load_bundle(model)
    paths = [str(p) for p in sorted(data.glob("*/*.png"))]
    features = []
    for part in bundle.parts():
        with featx.FeatureStore.open(part.training_store()) as store:
            x, found = store.features_for(paths)
        assert found.all()
        features.append(x)
    return dict(zip(paths, bundle.pipeline.predict_proba(np.hstack(features))))


def test_the_saved_winner_predicts_through_featx_predict(compared, elpv_folder, monkeypatch):
    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    got, expected = predicted_probabilities(comparison.model, elpv_folder), expected_probabilities(comparison.model, elpv_folder)
    assert sorted(got) == sorted(expected)
    for path in got:
        np.testing.assert_allclose(got[path], expected[path], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fusion", ["concat", "average"])
def test_a_fused_winner_holds_its_spaces_and_predicts_through_featx_predict(compared, elpv_folder, tmp_path, monkeypatch, fusion):
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    ranked = _compare._Run.leaderboard
    monkeypatch.setattr(_compare._Run, "leaderboard",
                        lambda run: sorted(ranked(run), key=lambda s: not s.row.candidate.startswith(fusion)))
    comparison = featx.compare(elpv_folder, out=tmp_path / "fused", **SETTINGS)
    assert comparison.winner.candidate.startswith(fusion) and comparison.n_extracted == 0
    bundle = featx.classify.load_bundle(comparison.model)
    assert [space.crop for space in bundle.spaces] == [32, 48] or [space.crop for space in bundle.spaces] == [48, 32]
    got, expected = predicted_probabilities(comparison.model, elpv_folder), expected_probabilities(comparison.model, elpv_folder)
    for path in expected:
        np.testing.assert_allclose(got[path], expected[path], rtol=1e-5, atol=1e-6)
    evaluated = CliRunner().invoke(main, ["evaluate", str(comparison.model), str(elpv_folder), "-q", "-w", "0"])
    assert evaluated.exit_code == 0 and "40 read from the training store, 0 extracted (2 feature spaces, counted in each)" in evaluated.output, evaluated.output
    listed = CliRunner().invoke(main, ["info", str(comparison.model)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count('"model": "efficientnet_lite0"') == 2 and "feature spaces: 2" in listed.output
    store = bundle.training_stores()[0]  # a map of one space's store cannot be coloured by a model of two
    mapped = CliRunner().invoke(main, ["map", str(store), "--color", "prediction", "--model", str(comparison.model),
                                       "--out", str(tmp_path / "map.html")])
    assert mapped.exit_code == 1 and "the model fuses 2 feature spaces" in mapped.output and "Traceback" not in mapped.output


def test_a_fused_model_takes_its_moved_fine_tuned_file_for_that_space_and_refuses_an_unrelated_one(
        elpv_folder, tmp_path, monkeypatch):
    """`--weights FILE` serves the fused model's space that came from FILE; the pretrained one finds its own."""
    from PIL import Image, ImageOps

    _, listing = training_listing(elpv_folder, tmp_path)
    tuned = featx.finetune(listing, out=tmp_path / "tuned.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                           batch_size=8, val_size=0, workers=0, progress=False).path
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    ranked = _compare._Run.leaderboard
    monkeypatch.setattr(_compare._Run, "leaderboard",
                        lambda run: sorted(ranked(run), key=lambda s: not s.row.candidate.startswith("concat")))
    comparison = featx.compare(elpv_folder, weights=[tuned], out=tmp_path / "out", **{**SETTINGS, "image_sizes": [32]})
    assert comparison.winner.candidate.startswith("concat") and "tuned.safetensors" in comparison.winner.candidate
    new = tmp_path / "new"  # mirrored cells: in no store, so both spaces are extracted
    new.mkdir()
    for path in sorted(elpv_folder.glob("*/*.png"))[:3]:
        ImageOps.mirror(Image.open(path)).save(new / path.name)
    before = featx.load_model(comparison.model).predict(new)[0].scores
    moved = tuned.rename(tmp_path / "moved.safetensors")
    predicted = CliRunner().invoke(main, ["predict", str(comparison.model), str(new), "--weights", str(moved), "-q", "-w", "0"])
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.reader(io.StringIO(predicted.stdout)))[1:]
    np.testing.assert_allclose(np.array([row[2:-1] for row in rows], dtype=float), before, rtol=1e-5, atol=1e-6)
    unrelated = tmp_path / "other.safetensors"
    unrelated.write_bytes(b"not these weights")
    refused = CliRunner().invoke(main, ["predict", str(comparison.model), str(new), "--weights", str(unrelated), "-q"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"weights {unrelated}: none of the model's feature spaces comes from them" in refused.output


@pytest.mark.parametrize("args, named", [
    (["--model", "efficientnet_lite0,no_such_net"], "no_such_net"),
    (["--clf", ""], "list of classifiers is empty"),
    (["--image-size", "32,abc"], "'32,abc'"),
    (["--image-size", "0"], "image_size"),
    (["--group-pattern", "(mono"], "(mono"),
])
def test_bad_lists_are_one_line_before_any_extraction(elpv_folder, tmp_path, private_cache, args, named):
    result = CliRunner().invoke(main, ["compare", str(elpv_folder), *args, "--cv", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert named in result.output and result.output.count("Error") == 1 and "Traceback" not in result.output
    assert not private_cache.exists() or not any(private_cache.rglob("*.h5"))


def elpv_listing(folder: Path, path: Path, header: bool = True) -> Path:
    """A CSV of the cells in `folder`: path, label and cell type (ELPV's own column), with or without a header."""
    from featx.datasets import load_elpv

    elpv = load_elpv()
    kind = {Path(name).name: cell for name, cell in zip(elpv.filenames, elpv.cell_type)}
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerows([["path", "label", "type"]] if header else [])
        out.writerows([str(cell), cell.parent.name, kind[cell.name]] for cell in sorted(folder.glob("*/*.png")))
    return path


@pytest.mark.parametrize("data, args, named, code", [
    ("headed", ["--group-column", "kind"], "no column 'kind' (its header: path, label, type)", 1),
    ("headless", ["--group-column", "type"], "it has no header row: give the column's number", 1),
    ("headless", ["--group-column", "4"], "no column 4 (its rows have 3)", 1),
    ("folder", ["--group-column", "3"], "a column needs a CSV file of images among the inputs", 1),
    ("headed", ["--group-column", "3", "--group-pattern", "mono"], "not both", 2),
    ("gap", ["--group-column", "type"], "no group given (its cell in the group column is empty", 1),
])
def test_a_bad_group_column_is_one_line_before_any_extraction(elpv_folder, tmp_path, private_cache, data, args, named, code):
    headed = elpv_listing(elpv_folder, tmp_path / "headed.csv")
    rows = headed.read_text().splitlines()
    (tmp_path / "gap.csv").write_text("\n".join([*rows[:2], rows[2].rsplit(",", 1)[0] + ",", *rows[3:]]) + "\n")
    given = {"headed": headed, "folder": elpv_folder, "gap": tmp_path / "gap.csv",  # gap: one cell without its type
             "headless": elpv_listing(elpv_folder, tmp_path / "headless.csv", header=False)}[data]
    result = CliRunner().invoke(main, ["compare", str(given), *args, "--cv", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == code, result.output
    assert named in result.output and result.output.count("Error") == 1 and "Traceback" not in result.output
    assert not private_cache.exists() or not any(private_cache.rglob("*.h5"))


def test_a_csv_group_column_stratifies_the_split_by_class_and_group():
    """ELPV's own labels.csv names each cell's type in its third column: the split it gives is the split by the
    dataset's cell types (as the paper's), and every class and type pair keeps its share in the test part."""
    from featx.comparing._candidates import Split
    from featx.datasets import _elpv_root, load_elpv
    from featx.images import find_images, read_column

    listing = _elpv_root() / "labels.csv"
    images, column = find_images(listing), read_column(listing, "3")
    elpv = load_elpv()
    kind = {Path(name).name: cell for name, cell in zip(elpv.filenames, elpv.cell_type)}
    by_column = Split.of(images, 0.25, seed=0, group=column)
    by_type = Split.of(images, 0.25, seed=0, group=lambda path: kind[Path(path).name])
    np.testing.assert_array_equal(by_column.test, by_type.test)
    assert not np.array_equal(Split.of(images, 0.25, seed=0).test, by_column.test)
    pairs = [f"{label}/{column[path]}" for label, path in zip(by_column.labels, by_column.paths)]
    for pair in set(pairs):
        members = {i for i, p in enumerate(pairs) if p == pair}
        assert abs(len(members & set(by_column.test)) - 0.25 * len(members)) <= 1, pair


def test_a_group_column_names_its_column_by_number_or_by_header(elpv_folder, tmp_path):
    from featx.images import read_column

    headed, headless = elpv_listing(elpv_folder, tmp_path / "a.csv"), elpv_listing(elpv_folder, tmp_path / "b.csv", False)
    assert read_column(headed, "type") == read_column(headed, "3") == read_column(headless, "3")
    assert len(read_column(headed, "type")) == 20 and set(read_column(headed, "type").values()) == {"mono", "poly"}


def test_a_failing_candidate_is_reported_and_the_others_run(compared, elpv_folder, tmp_path, monkeypatch):
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a state dict")
    comparison = featx.compare(elpv_folder, image_sizes=32, weights=[broken], out=tmp_path / "out", cv=2,
                               progress=False, engine="torch")
    assert [row.candidate for row in comparison.rows] == [SINGLES[0], "efficientnet_lite0[broken.pth] 32px avg / logreg"]
    assert comparison.rows[1].error and not comparison.rows[0].error and comparison.model.is_file()
    assert "failed" in comparison.table().splitlines()[2]

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text(), parse_constant=refuse)  # as a browser
    assert saved["rows"][1]["cv_mean"] is None and saved["rows"][0]["cv_mean"] == comparison.rows[0].cv_mean


def test_a_candidate_scikit_learn_cannot_fit_is_reported_and_the_others_run(compared, elpv_folder, tmp_path, monkeypatch):
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    searched = _compare._Run.search

    def failing_second(run, name, *args, **kwargs):
        if name == SINGLES[1]:
            raise ValueError("All the 2 fits failed.")
        return searched(run, name, *args, **kwargs)

    monkeypatch.setattr(_compare._Run, "search", failing_second)
    comparison = featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    assert names(comparison) == SINGLES and comparison.rows[1].error == "All the 2 fits failed."
    assert comparison.model.is_file()


def test_a_space_whose_stored_features_hold_nan_fails_alone_in_one_line(compared, elpv_folder, tmp_path, monkeypatch):
    """A store damaged by an earlier version: its candidate fails naming the remedy, the other wins (a NaN test
    row made the winner's refit raise with a traceback; a NaN training row gave a "nan" CV score, fused)."""
    import shutil

    import h5py

    from featx.features._store import FeatureStore

    _, cache, _ = compared
    copy = Path(shutil.copytree(cache, tmp_path / "cache"))
    monkeypatch.setenv("FEATX_CACHE", str(copy))
    for store in copy.rglob("*.h5"):
        with FeatureStore.open(store) as opened:
            wide = opened.space.crop == 48
        if wide:
            with h5py.File(store, "r+") as h5:
                h5["features"][5, 7] = np.nan
    comparison = featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    assert names(comparison) == SINGLES and comparison.winner.candidate == SINGLES[0]
    error = comparison.rows[1].error
    assert re.fullmatch(r"the features of 1 file\(s\) in .*\.h5 hold NaN or infinity \([^ ]+\.png\): "
                        r"featx info --check --repair .*\.h5 copies the others into a new store, where featx extract "
                        r"redoes them", error), error


def test_a_winner_that_cannot_be_refitted_is_one_line_and_keeps_every_cv_score(compared, elpv_folder, tmp_path, monkeypatch):
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))

    def failing(run, scored, x=None):
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")

    monkeypatch.setattr(_compare._Run, "tested", failing)
    with pytest.raises(featx.errors.FeatxError, match=r"^the winner, .+, cannot be refitted on the training part: "
                                                      r"Input X contains infinity .*; every candidate's CV scores are in "):
        featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    assert len(list(csv.reader(open(tmp_path / "out" / "leaderboard.csv")))) == 1 + 4


def test_an_image_no_network_can_read_is_left_out_by_name_and_the_candidates_run(compared, elpv_copy, tmp_path, monkeypatch):
    """A file with a PNG signature and no image after it fails the first space's extraction: it leaves the
    comparison (one line naming it), instead of failing every candidate."""
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    broken = next(elpv_copy.glob("*/")) / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"no image here" * 10)
    lines = []
    comparison = featx.compare(elpv_copy, out=tmp_path / "out", log=lines.append, **SETTINGS)
    assert not any(row.error for row in comparison.rows) and comparison.model.is_file()
    assert comparison.n_train + comparison.n_test == 20 and comparison.n_extracted == 0  # the cells: from the stores
    left = [line for line in lines if line.startswith("left out of the comparison")]
    assert len(left) == 1 and str(broken) in left[0] and "1 image(s)" in left[0]


def test_weights_fine_tuned_on_a_test_image_are_refused(elpv_folder, tmp_path):
    """... and a fine-tuned file is a candidate at the size it was trained at, whatever sizes are listed."""
    from featx.comparing._candidates import candidates

    tuned = featx.finetune(elpv_folder, out=tmp_path / "tuned.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                           batch_size=8, val_size=0, workers=0, progress=False).path
    listed = candidates("efficientnet_lite0", None, "avg", [48, 64], "none", [tuned], "logreg")
    assert [c.image_size for c in listed] == [48, 64, 32] and listed[2].weights == str(tuned)
    result = CliRunner().invoke(main, ["compare", str(elpv_folder), "--weights", str(tuned), "--image-size", "32",
                                       "--cv", "2", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert str(tuned) in result.output and "test part" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


def test_ctrl_c_keeps_the_candidates_scored_so_far(compared, elpv_folder, tmp_path, monkeypatch):
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    searched = _compare._Run.search

    def interrupted_second(run, *args, **kwargs):
        if run.scored:
            raise KeyboardInterrupt
        return searched(run, *args, **kwargs)

    monkeypatch.setattr(_compare._Run, "search", interrupted_second)
    with pytest.raises(featx.errors.Interrupted, match="the 1 candidates scored so far"):
        featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    with open(tmp_path / "out" / "leaderboard.csv") as f:
        assert [row["candidate"] for row in csv.DictReader(f)] == [SINGLES[0]]


def test_ctrl_c_during_the_winners_refit_keeps_every_cv_score(compared, elpv_folder, tmp_path, monkeypatch):
    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))

    def interrupted(run, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_compare._Run, "tested", interrupted)
    with pytest.raises(featx.errors.Interrupted, match="before .*model.skops was saved"):
        featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    with open(tmp_path / "out" / "leaderboard.csv") as f:
        assert [row["candidate"] for row in csv.DictReader(f)] == names(comparison)
    assert not (tmp_path / "out" / "model.skops").exists()


def test_the_command_gives_the_same_leaderboard(compared, elpv_folder, tmp_path, monkeypatch):
    comparison, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    result = CliRunner().invoke(main, ["compare", str(elpv_folder), "--image-size", "32,48", "--clf", "logreg", "--fuse", "2",
                                       "--cv", "2", "--engine", "torch", "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    ranked = [re.findall(r"^ *\d+  (.+?) +(\d\.\d{3} ± \d\.\d{3}) ", text, re.M) for text in (comparison.table(), result.stdout)]
    assert len(ranked[0]) == 4 and ranked[0] == ranked[1]  # the candidates, their order and CV scores
    assert f"model: {tmp_path / 'out' / 'model.skops'}   leaderboard: {tmp_path / 'out' / 'leaderboard.html'}" in result.stdout


def test_a_network_fine_tuned_on_the_training_part_is_accepted_and_its_cv_called_optimistic(elpv_folder, tmp_path):
    from featx.comparing._candidates import check_no_leak, seen_in_training

    split, listing = training_listing(elpv_folder, tmp_path)
    tuned = featx.finetune(listing, out=tmp_path / "tuned.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                           batch_size=8, val_size=0, workers=0, progress=False).path
    check_no_leak([str(tuned)], split)  # trained on the training part only: accepted
    assert seen_in_training([str(tuned), None], split) == {str(tuned): len(split.train)}


@pytest.mark.parametrize("clf", ["linsvm", "svm"])
def test_an_averaged_fusion_with_a_platt_scaled_member_is_scored_saved_and_loaded(tmp_path, monkeypatch, clf):
    """linsvm and svm give no probabilities: they are Platt-scaled in the average (the linsvm fusion failed
    before; svm used SVC's deprecated probability=True), and the saved winner loads through skops's trust check."""
    from featx.datasets import write_elpv_folder

    elpv_folder = write_elpv_folder(tmp_path / "cells", per_class=12)  # Platt scaling: 3 inner folds per fit
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    board = _compare._Run.leaderboard
    monkeypatch.setattr(_compare._Run, "leaderboard",  # the average first, to save it as the winner
                        lambda run: sorted(board(run), key=lambda s: not s.row.candidate.startswith("average")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # such as SVC's: "The `probability` parameter was deprecated"
        comparison = featx.compare(elpv_folder, **{**SETTINGS, "clfs": [clf]}, out=tmp_path / "out")
    averaged = comparison.rows[0]
    assert averaged.candidate.startswith("average(") and not averaged.error and 0 < averaged.cv_mean <= 1
    predictions, _ = featx.load_model(comparison.model).predict(sorted(elpv_folder.glob("*/*.png"))[:3])
    assert predictions.score_kind == "probability" and np.allclose(predictions.scores.sum(1), 1)


def test_without_fine_tuned_networks_the_folds_are_stratified_k_fold_of_the_training_part(elpv_folder):
    from sklearn.model_selection import StratifiedKFold

    from featx.comparing._candidates import Split
    from featx.images._inputs import find_images

    split = Split.of(find_images(elpv_folder), test_size=0.25, seed=1, cv=3)
    y = split.labels[split.train]
    expected = StratifiedKFold(3, shuffle=True, random_state=1).split(np.zeros(len(y)), y)
    for (train, held), (train_expected, held_expected) in zip(split.folds(3, 1), expected, strict=True):
        np.testing.assert_array_equal(train, train_expected)
        np.testing.assert_array_equal(held, held_expected)


def test_a_network_fine_tuned_with_a_validation_part_is_cross_validated_on_that_part_only(elpv_folder, tmp_path, monkeypatch):
    """Its network learned the labels of the other training images: CV holds out only the validation part (whose
    images stay in every training fold), for every candidate alike."""
    from featx.backbones._weights import safetensors_metadata
    from featx.comparing._candidates import unseen

    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    split, listing = training_listing(elpv_folder, tmp_path)
    tuned = featx.finetune(listing, out=tmp_path / "tuned.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                           batch_size=8, val_size=0.55, workers=0, progress=False).path
    metadata = safetensors_metadata(tuned)
    validated = set(metadata["validated_on"])
    assert len(validated) == metadata["n_val"] == 8 and validated < set(metadata["trained_on"])
    held = unseen([str(tuned)], split, cv=2)
    assert {split.keys[i] for i in split.train[held]} == validated
    folds = split.folds(2, 0, held)
    assert sorted(np.concatenate([test for _, test in folds])) == list(np.flatnonzero(held))
    assert all(sorted(train) == sorted(set(range(len(split.train))) - set(test)) for train, test in folds)
    lines = []
    comparison = featx.compare(elpv_folder, weights=[tuned], image_sizes=[32], clfs=["logreg"], cv=2, progress=False,
                               engine="torch", out=tmp_path / "out", log=lines.append)
    assert (comparison.n_train, comparison.n_scored) == (15, 8) and len(comparison.rows) == 2
    assert any(f"{tuned} learned the labels of 7 training images" in line and "only the 8 others" in line for line in lines)
    assert not any("optimistic" in line for line in lines)


def test_fine_tuned_files_of_earlier_versions_count_every_recorded_image_as_learned_from(elpv_folder, tmp_path):
    """A file of main before #27 records no images (tests/data/main-ec68bad): nothing to check or hold out; one of
    session 13 records trained_on without validated_on: every image it lists counts as learned from."""
    import json as json_

    from safetensors import safe_open
    from safetensors.torch import save_file

    from featx.comparing._candidates import Split, learned_from, seen_in_training, unseen
    from featx.images._inputs import find_images

    old = Path(__file__).parent / "data" / "main-ec68bad" / "finetuned.safetensors"
    split = Split.of(find_images(elpv_folder), test_size=0.25, seed=0, cv=2)
    assert learned_from(str(old)) == set() and unseen([str(old)], split, 2) is None
    assert seen_in_training([str(old)], split) == {}
    with safe_open(str(old), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    recorded = json_.loads(metadata["featx"])
    training = sorted(split.keys[i] for i in split.train)
    recorded["trained_on"] = training  # as featx wrote it in session 13: the training and validation parts together
    session13 = tmp_path / "session13.safetensors"
    save_file(tensors, str(session13), metadata={**metadata, "featx": json_.dumps(recorded)})
    assert learned_from(str(session13)) == set(training)
    assert unseen([str(session13)], split, 2) is None  # no image left to hold out: CV on all, called optimistic
    assert seen_in_training([str(session13)], split) == {str(session13): len(split.train)}


def test_cross_fitted_fold_networks_score_every_training_image_each_fold_by_the_network_that_never_saw_it(
        elpv_folder, tmp_path, monkeypatch):
    """`featx finetune --folds 2` beside the network: compare cross-validates on all the training images; fold k's
    features come from the network trained without fold k (its classifier trains on that network's features of
    the other fold), so the fine-tuned candidate's CV score is the best over the grid of exactly that."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from featx.backbones._weights import fold_path, safetensors_metadata
    from featx.classify import _fitting
    from featx.classify._classifiers import get_classifier

    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    split, listing = training_listing(elpv_folder, tmp_path)
    recipe = {"image_size": 32, "freeze_epochs": 0, "epochs": 2, "batch_size": 4, "val_size": 0, "workers": 0,
              "progress": False}  # the body learns: each network's features its own
    tuned = featx.finetune(listing, out=tmp_path / "tuned.safetensors", folds=2, **recipe).path
    files = [fold_path(tuned, k, 2) for k in (1, 2)]
    train_keys = [split.keys[i] for i in split.train]
    left_out = [np.array([key not in safetensors_metadata(f)["trained_on"] for key in train_keys]) for f in files]
    assert [safetensors_metadata(f)["fold"] for f in files] == [[1, 2], [2, 2]]
    assert (np.sum(left_out, axis=0) == 1).all()  # each training image left out by exactly one fold network
    for held in left_out:  # stratified: each class in each fold
        assert set(split.labels[split.train][held]) == set(range(len(split.classes)))
    stamps = [f.stat().st_mtime_ns for f in (tuned, *files)]
    lines = []
    featx.finetune(listing, out=tuned, folds=2, log=lines.append, **recipe)  # a rerun trains nothing
    assert [f.stat().st_mtime_ns for f in (tuned, *files)] == stamps and sum("kept" in line for line in lines) == 3

    searched, search_ = [], _fitting.search
    monkeypatch.setattr(_fitting, "search", lambda x, y, *rest: searched.append((x, y, rest[2])) or search_(x, y, *rest))
    lines = []
    comparison = featx.compare(elpv_folder, weights=[tuned], image_sizes=[32], clfs=["logreg"], cv=2, fuse=2,
                               progress=False, engine="torch", out=tmp_path / "out", log=lines.append)
    assert comparison.n_scored == comparison.n_train == 15
    averaged = next(r for r in comparison.rows if r.candidate.startswith("average("))
    assert not averaged.error and 0 <= averaged.cv_mean <= 1
    assert any("each fold's features from the network trained without that fold" in line for line in lines)
    recorded = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["notes"]
    assert recorded == list(comparison.notes) and "trained without that fold" in recorded[0]
    assert "trained without that fold" in (tmp_path / "out" / "leaderboard.html").read_text()
    row = next(r for r in comparison.rows if r.candidate.startswith("efficientnet_lite0[tuned.safetensors]"))
    y = split.labels[split.train]
    per_network = [featx.PretrainedFeatures(weights=f, image_size=32).fit_transform([split.paths[i] for i in split.train])
                   for f in files]
    assert not np.allclose(per_network[0], per_network[1], atol=1e-3)
    x, _, folds = next(s for s in searched if s[0].shape[0] > len(y))  # the fine-tuned space's: a block per fold
    for (fit, held), features, left in zip(folds, per_network, left_out, strict=True):
        np.testing.assert_allclose(x[held], features[left], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x[fit], features[~left], rtol=1e-5, atol=1e-5)
    frozen_folds = next(s[2] for s in searched if s[0].shape[0] == len(y))  # the frozen space: the same folds
    assert [list(held) for _, held in frozen_folds] == [list(np.flatnonzero(left)) for left in left_out]
    clf = get_classifier("logreg")
    by_value = []
    for value in clf.usable_grid(min(len(y) - h.sum() for h in left_out)):
        scores = []
        for features, held in zip(per_network, left_out):
            pipeline = Pipeline([("scale", StandardScaler()), ("clf", clf.make(None, 0).set_params(**{clf.param: value}))])
            fitted = pipeline.fit(features[~held], y[~held])
            scores.append(balanced_accuracy_score(y[held], fitted.predict(features[held])))
        by_value.append(np.mean(scores))
    assert row.cv_mean == pytest.approx(max(by_value), abs=1e-9)

    files[1].unlink()  # a fold network missing: CV on the training part as before, called optimistic, and why
    lines = []
    featx.compare(elpv_folder, weights=[tuned], image_sizes=[32], clfs=["logreg"], cv=2, progress=False,
                  engine="torch", out=tmp_path / "out2", log=lines.append)
    assert any(f"{tuned} has no 2 fold networks" in line for line in lines)
    assert any("optimistic" in line for line in lines)


def test_a_fold_network_fine_tuned_on_a_test_image_is_refused_by_name(elpv_folder, tmp_path, monkeypatch):
    """The fold networks' features enter the CV: one that saw a test image is refused as the network itself is."""
    import shutil

    from featx.backbones._weights import fold_path
    from featx.errors import BadInputError

    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    split, listing = training_listing(elpv_folder, tmp_path)
    recipe = {"image_size": 32, "freeze_epochs": 1, "epochs": 0, "batch_size": 8, "val_size": 0, "workers": 0,
              "progress": False}
    tuned = featx.finetune(listing, out=tmp_path / "tuned.safetensors", **recipe).path
    everything = featx.finetune(elpv_folder, out=tmp_path / "all.safetensors", folds=2, **recipe).path
    for k in (1, 2):  # fold networks that saw some of the test part, beside a network that did not
        shutil.copy(fold_path(everything, k, 2), fold_path(tuned, k, 2))
    with pytest.raises(BadInputError, match=r"tuned\.fold1-of-2\.safetensors was fine-tuned on \d+ image\(s\) of the test part"):
        featx.compare(elpv_folder, weights=[tuned], image_sizes=[32], clfs=["logreg"], cv=2, progress=False,
                      engine="torch", out=tmp_path / "out")


def test_a_winner_cv_cannot_tell_from_the_runner_up_is_said():
    """ELPV seed 0, cross-fitted (docs/benchmarks.md): the average and the concatenation of all 8 spaces both got
    1,603 of 1,968 training images right; their means differ by how the errors fell into the folds. One image more
    is a difference compare can see; a failed candidate is no runner-up."""
    from featx.comparing._leaderboard import Row, tie_note

    average, concat = Row("average(8)", 0.8145361077743765), Row("concat(8) / svm", 0.8145257746606218)
    note = tie_note([average, concat, Row("lite0 / svm", 0.8054)], 1968)
    assert note.startswith("CV does not separate the winner from concat(8) / svm (") and "within half an image of the 1968 scored" in note
    assert tie_note([Row("failed", error="unreadable weights"), average, concat], 1968) == note
    assert tie_note([average, Row("concat(8) / svm", 0.8145361077743765 - 1 / 1968)], 1968) == ""
    assert tie_note([average, Row("failed", error="unreadable weights")], 1968) == ""


ONE_SPACE = {**SETTINGS, "image_sizes": [32], "fuse": 0}  # the compared cache's first space: nothing to extract


def test_an_unexpected_error_fails_its_candidate_only_and_one_that_stops_the_run_keeps_the_leaderboard(
        compared, elpv_folder, tmp_path, monkeypatch):
    """A MemoryError or a joblib RuntimeError is one candidate's (or fusion's) failure, on one line, in the table
    and the page as failed; an error that escapes the run still leaves the CV scores computed."""
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    searched = _compare._Run.search

    def failing(run, name, *args, **kwargs):
        if name == SINGLES[1]:
            raise MemoryError
        return searched(run, name, *args, **kwargs)

    def averaged(run, best):  # the failed row is named as a fusion of that kind is
        raise RuntimeError("A task has failed to un-serialize.\nTraceback ...\nEOFError: Ran out of input")

    monkeypatch.setattr(_compare._Run, "search", failing)
    monkeypatch.setattr(_compare._Run, "averaged", averaged)
    comparison = featx.compare(elpv_folder, out=tmp_path / "out", **{**SETTINGS, "fuse": 0})
    assert names(comparison) == SINGLES and comparison.rows[1].error == "MemoryError" and comparison.model.is_file()
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<td>failed: MemoryError</td><td></td><td></td><td></td><td></td><td></td></tr>" in page

    monkeypatch.setattr(_compare._Run, "search", searched)
    comparison = featx.compare(elpv_folder, out=tmp_path / "fused", **SETTINGS)
    failed = next(row for row in comparison.rows if row.candidate == "average(2 best)")
    assert failed.error == "RuntimeError: A task has failed to un-serialize. (EOFError: Ran out of input)"

    def stopped(run, k):
        raise RuntimeError("the run itself broke")

    monkeypatch.setattr(_compare._Run, "fused", stopped)
    with pytest.raises(RuntimeError, match="the run itself broke"):
        featx.compare(elpv_folder, out=tmp_path / "stopped", **SETTINGS)
    with open(tmp_path / "stopped" / "leaderboard.csv") as f:
        assert sorted(row["candidate"] for row in csv.DictReader(f)) == SINGLES


def test_default_in_a_list_is_the_default_model_and_blank_items_are_dropped(compared, elpv_folder, tmp_path, monkeypatch):
    """--model efficientnet_lite0,default and --layer 'default;;': both name one feature space, one candidate."""
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    result = CliRunner().invoke(main, ["compare", str(elpv_folder), "--model", "efficientnet_lite0,default",
                                       "--layer", "default;;", "--image-size", "32", "--clf", "logreg", "--cv", "2",
                                       "--engine", "torch", "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert re.findall(r"^ *\d+  (.+?)  ", result.stdout, re.M) == [SINGLES[0]]


def test_layers_naming_one_feature_space_make_one_candidate():
    from featx.comparing._candidates import candidates

    listed = candidates("efficientnet_lite0", [None, "", "bn2, bn2", "bn2", "blocks.5,,bn2"], "avg", 32, "none", [], "logreg")
    assert [c.layer for c in listed] == [None, "bn2", "blocks.5,bn2"]


def test_an_out_folder_in_a_data_folder_is_refused(elpv_folder, tmp_path):
    for out in (elpv_folder / "results", elpv_folder / "defective"):
        result = CliRunner().invoke(main, ["compare", str(elpv_folder), "--cv", "2", "-q", "--out", str(out)])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert f"cannot write {out}: it is inside the input folder {elpv_folder}" in result.output and "--out" in result.output
    assert not (elpv_folder / "results").exists()


def test_a_single_class_or_a_class_too_small_for_the_folds_is_refused_before_any_extraction(elpv_folder, tmp_path, private_cache):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(elpv_folder / "functional", one / "functional")
    with pytest.raises(featx.errors.BadInputError, match=rf"^{one} has a single class \(functional\); a classifier needs at least two$"):
        featx.compare(one, out=tmp_path / "out", **ONE_SPACE)
    small = tmp_path / "small"
    shutil.copytree(elpv_folder / "functional", small / "functional")
    shutil.copytree(elpv_folder / "defective", small / "defective")
    for extra in sorted((small / "defective").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(featx.errors.BadInputError,
                       match=r"classes with fewer than 3 images \(--cv 2 folds plus the test split\): defective \(2\); add images$"):
        featx.compare(small, out=tmp_path / "out", **ONE_SPACE)
    assert not list(private_cache.rglob("*.h5")) and not (tmp_path / "out").exists()


def test_label_pattern_names_the_classes_from_file_names(compared, elpv_folder, tmp_path, monkeypatch):
    import shutil

    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in elpv_folder.glob("*/*.png"):
        shutil.copy(image, flat / f"{image.parent.name}_{image.name}")
    result = CliRunner().invoke(main, ["compare", str(flat), "--label-pattern", r"(.+)_cell\d+$", "--image-size", "32",
                                       "--clf", "logreg", "--cv", "2", "--engine", "torch", "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert sorted(saved["classes"]) == sorted(p.name for p in elpv_folder.iterdir())


def test_a_rerun_into_the_same_out_removes_the_previous_winner_first(compared, elpv_folder, tmp_path, monkeypatch):
    """... so a rerun interrupted before its winner is saved leaves no earlier model beside its leaderboard; a
    single-space winner's report names its store for featx map; --fuse 2 of one space says nothing was fused."""
    from featx.outputs import manifest_path, remove_listed

    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    out = tmp_path / "out"
    lines = []
    first = featx.compare(elpv_folder, out=out, log=lines.append, **{**ONE_SPACE, "fuse": 2})
    assert "note: nothing fused (--fuse 2): 1 feature space(s) scored, a fusion needs 2" in lines
    report = (out / "model.skops.html").read_text()
    manifest = json.loads(manifest_path(out / "model.skops").read_text())  # the files the run wrote
    assert f"featx map {featx.classify.load_bundle(first.model).info['store']} --color prediction" in report
    (out / "mine.txt").write_text("not the run's")
    monkeypatch.setattr(_compare._Run, "tested", lambda run, *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(featx.errors.Interrupted, match="before .*model.skops was saved"):
        featx.compare(elpv_folder, out=out, **ONE_SPACE)
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.html", "leaderboard.json", "mine.txt"]
    assert set(manifest["files"]) >= {"model.skops", "model.skops.html"}
    assert remove_listed(out / "model.skops.manifest.json") == []  # none left: nothing to remove


def test_remove_listed_leaves_files_changed_since_and_outside_the_folder(tmp_path):
    from featx.outputs import output_set, remove_listed

    (tmp_path / "set").mkdir()
    outside, kept, removed = tmp_path / "outside.txt", tmp_path / "set" / "kept.txt", tmp_path / "set" / "removed.txt"
    with output_set(tmp_path / "set" / "manifest.json") as files:
        for path in (outside, kept, removed):
            path.write_text("written")
            files.append(path)
    kept.write_text("changed since")
    assert remove_listed(tmp_path / "set" / "manifest.json") == [removed, tmp_path / "set" / "manifest.json"]
    assert outside.is_file() and kept.is_file() and not removed.exists()


def test_files_left_out_of_the_split_or_ignored_in_the_split_csv_are_said(compared, elpv_copy, tmp_path, monkeypatch):
    from featx.comparing._candidates import Split
    from featx.images._inputs import find_images

    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    link = elpv_copy / "defective" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # find_images's InputWarning of the broken link
        comparison = featx.compare(elpv_copy, out=tmp_path / "out", log=lines.append, **ONE_SPACE)
    assert comparison.n_train + comparison.n_test == 20
    said = [line for line in lines if line.startswith("left out of the comparison")]
    assert said == [f"left out of the comparison: 1 file(s) that cannot be read: {link}: unreadable: No such file or directory"]

    cells = sorted(str(p) for p in elpv_copy.glob("*/cell*.png"))
    other = tmp_path / "other.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n other bytes")
    listing = tmp_path / "split.csv"
    listing.write_text(f"{cells[0]}\n{cells[7]}\n{other}\n")
    split = Split.of(find_images(elpv_copy), 0.25, 0, test_files=find_images(listing), cv=2)
    assert len(split.test) == 2
    assert split.said[1] == f"ignored: the split CSV names 1 file(s) not compared: {other}: not among DATA's labelled images"
    listing.write_text(f"{cells[0]}\n{tmp_path / 'missing.png'}\n")
    with pytest.raises(featx.errors.BadInputError, match=r"the split CSV names 1 file\(s\) that cannot be read: .*missing\.png"):
        Split.of(find_images(elpv_copy), 0.25, 0, test_files=find_images(listing), cv=2)


def test_copies_of_a_cell_under_other_names_are_one_image_of_the_split(elpv_copy):
    """A copy (the same bytes, another name) is one image of the comparison: counted once, and never on both
    sides of the split, or the test part would score images the candidates were trained on."""
    import shutil

    from featx.comparing._candidates import Split
    from featx.images._content import content_keys
    from featx.images._inputs import find_images

    cells = sorted(elpv_copy.glob("*/*.png"))
    for cell in cells[::2]:
        shutil.copy(cell, cell.with_name(f"copy of {cell.name}"))
    images = find_images(elpv_copy)
    assert len(images) == len(cells) + len(cells[::2])
    distinct = {hashed.key for hashed in content_keys(images.paths)}
    split = Split.of(images, 0.25, 0, cv=2)
    key = {path: hashed.key for path, hashed in zip(split.paths, content_keys(split.paths))}
    assert len(split.paths) == len(distinct) and sorted(key.values()) == sorted(distinct)
    assert list(split.keys) == [key[path] for path in split.paths]
    assert len(split.train) + len(split.test) == len(distinct)
    assert not {key[split.paths[i]] for i in split.train} & {key[split.paths[i]] for i in split.test}


def test_one_weights_file_under_two_names_or_a_copy_is_one_candidate(elpv_folder, tmp_path, monkeypatch):
    """Each made its own row and was fused with itself (the same columns twice)."""
    import shutil

    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))  # not the module's: its stores stay those of SETTINGS
    _, listing = training_listing(elpv_folder, tmp_path)
    tuned = featx.finetune(listing, out=tmp_path / "runA" / "tuned.safetensors", image_size=32, freeze_epochs=1,
                           epochs=0, batch_size=8, val_size=0, workers=0, progress=False).path
    copy = Path(shutil.copytree(tuned.parent, tmp_path / "runB")) / tuned.name
    lines = []
    comparison = featx.compare(elpv_folder, weights=[tuned, copy, tmp_path / "runA" / ".." / "runA" / tuned.name],
                               out=tmp_path / "out", log=lines.append, **{**ONE_SPACE, "fuse": 3})
    singles = [name for name in names(comparison) if not name.startswith(("average(", "concat("))]
    assert sorted(singles) == [SINGLES[0], "efficientnet_lite0[tuned.safetensors] 32px avg / logreg"]
    fusions = [row for row in comparison.rows if row.members]
    assert len(fusions) == 2 and all(len(row.members) == 2 for row in fusions)
    assert f"note: {copy} holds the same weights as {tuned}: compared once" in lines


def test_weights_files_of_one_name_in_two_folders_are_told_apart():
    from featx.comparing._candidates import candidates

    listed = candidates("efficientnet_lite0", None, "avg", 32, "none",
                        ["/tmp/x/runA/tuned.pth", "/tmp/x/runB/tuned.pth", "/tmp/y/other.pth"], "logreg")
    assert [c.name for c in listed] == [
        "efficientnet_lite0 32px avg / logreg", "efficientnet_lite0[runA/tuned.pth] 32px avg / logreg",
        "efficientnet_lite0[runB/tuned.pth] 32px avg / logreg", "efficientnet_lite0[other.pth] 32px avg / logreg"]


@pytest.mark.parametrize("options, message", [
    ({"seed": -1}, r"--seed must be between 0 and 4294967295, not -1"),
    ({"seed": 2**32, "split_csv": "test.csv"}, r"--seed must be between 0 and 4294967295, not 4294967296"),
    ({"fuse": 1}, r"--fuse must be 0 \(no fusion\) or a number of spaces from 2, not 1"),
    ({"cv": 1}, r"--cv must be at least 2, not 1"),  # the checks of featx fit, the same words
    ({"test_size": 1.5}, r"--test-size must be between 0 and 1, not 1.5"),
    ({"n_jobs": 0}, r"--n-jobs 0 runs nothing"),  # every candidate failed in joblib before
    ({"models": []}, r"nothing to compare: the list of models is empty"),  # the default model was compared
    ({"split_csv": "test.csv", "test_size": 0.3}, r"--split-csv names the test part: give neither --test-size nor a group"),
    ({"split_csv": "test.csv", "group": "(mono|poly)"}, r"--split-csv names the test part: give neither --test-size nor a group"),
])
def test_parameters_compare_cannot_use_are_refused_in_one_line(elpv_folder, tmp_path, options, message):
    with pytest.raises(featx.errors.ParameterError, match=f"^{message}"):
        featx.compare(elpv_folder, out=tmp_path / "out", **{**ONE_SPACE, **options})
    assert not (tmp_path / "out").exists()


def test_an_unknown_layer_is_refused_in_one_short_line_before_any_extraction(elpv_folder, tmp_path, private_cache):
    with pytest.raises(featx.errors.UnknownNameError) as raised:
        featx.compare(elpv_folder, layers=["blocks.5", "blocks.99"], out=tmp_path / "out", **ONE_SPACE)
    message = str(raised.value)
    assert message.startswith("unknown layer of efficientnet_lite0 'blocks.99'; valid names: conv_stem, bn1")
    assert "(272 in all); closest: blocks.6" in message and len(message) < 300 and "\n" not in message
    assert not list(private_cache.rglob("*.h5"))


def test_a_fused_winners_report_names_its_stores_and_gives_no_map_command(compared, elpv_folder, tmp_path, monkeypatch):
    """featx map takes one store and refuses a model of several spaces: no command that cannot run."""
    _, cache, _ = compared
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    board = _compare._Run.leaderboard
    monkeypatch.setattr(_compare._Run, "leaderboard",  # the concatenation first, to save it as the winner
                        lambda run: sorted(board(run), key=lambda s: not s.row.candidate.startswith("concat")))
    comparison = featx.compare(elpv_folder, out=tmp_path / "out", **SETTINGS)
    assert comparison.winner.candidate.startswith("concat(")
    report = (tmp_path / "out" / "model.skops.html").read_text()
    assert "featx map" not in report and all(str(store) in report for store in sorted(cache.glob("*.h5")))
