"""featx audit on real images: ELPV cells with planted label errors and an identical copy under another class,
scikit-image photographs with a re-encoded and a cropped copy; the store and the inputs are never written."""
from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path

import html5lib
import numpy as np
import pytest
from click.testing import CliRunner
from featx.cli import main

import featx
from featx.auditing._audit import KINDS, audit
from featx.auditing._findings import IMAGE_FINDINGS
from featx.datasets import load_elpv
from featx.errors import ParameterError

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from audit_elpv import clearly_defective  # noqa: E402  (the cells the ELPV benchmark plants)

PLANTED = 5  # clearly defective cells filed as functional (alike: the folds that hold them learn their wrong label)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """(folder, store, facts): 30 functional mono cells plus PLANTED clearly defective ones in functional/,
    30 clearly defective mono cells in defective/ plus a byte-identical copy of a functional cell; unlabelled at the top: chelsea,
    a JPEG q85 copy and a 2% crop of it, and two other photographs."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("audit") / "cells"
    elpv = load_elpv()
    rng = np.random.default_rng(0)
    mono = elpv.cell_type == "mono"  # one cell type: 60 images are few for a classifier
    functional = rng.choice(np.flatnonzero(mono & (elpv.target == 0)), 30, replace=False)
    defective = rng.choice(np.intersect1d(clearly_defective(elpv), np.flatnonzero(mono)), 30 + PLANTED, replace=False)
    for folder, members in (("functional", [*functional, *defective[:PLANTED]]), ("defective", defective[PLANTED:])):
        (root / folder).mkdir(parents=True)
        for i in members:
            shutil.copyfile(elpv.filenames[i], root / folder / Path(elpv.filenames[i]).name)
    planted = sorted(str(root / "functional" / Path(elpv.filenames[i]).name) for i in defective[:PLANTED])
    twin = Path(elpv.filenames[functional[0]]).name
    shutil.copyfile(root / "functional" / twin, root / "defective" / f"copy-of-{twin}")
    cat = Image.fromarray(data.chelsea())
    cat.save(root / "chelsea.png")
    cat.save(root / "chelsea-q85.jpg", quality=85)
    w, h = cat.size  # 2% of each side cut, half on each edge
    cat.crop((round(0.01 * w), round(0.01 * h), w - round(0.01 * w), h - round(0.01 * h))).save(root / "chelsea-crop2.png")
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    Image.fromarray(data.astronaut()).save(root / "astronaut.png")
    store = root.parent / "store.h5"
    featx.extract(root, store=store, progress=False)
    possibly = [elpv.filenames[i] for i in rng.choice(np.flatnonzero(mono & (elpv.target == 1)), 8, replace=False)]
    return root, store, {"planted": planted, "twin": twin, "possibly": possibly}


@pytest.fixture(scope="module")
def found(audited):
    """The audit of the whole store."""
    return audit(audited[1], n_jobs=1)


def rel(paths) -> set[str]:
    return {str(Path(p).resolve()) for p in paths}


def test_identical_content_under_two_labels_is_a_conflict(audited, found):
    root, store, facts = audited
    result = found
    rows = result.tables["exact_duplicates"].rows
    assert rel(r[1] for r in rows) == rel([root / "functional" / facts["twin"], root / "defective" / f"copy-of-{facts['twin']}"])
    assert {r[2] for r in rows} == {"functional", "defective"} and all(r[4] for r in rows)
    assert result.counts["exact duplicate groups with conflicting labels"] == 1


def test_copies_of_a_photograph_are_near_duplicates_and_other_photographs_are_not(audited, found):
    root = audited[0]
    near = found.tables["near_duplicates"].rows
    cluster_of = {str(Path(r[1]).resolve()): r[0] for r in near}
    cat = [str((root / name).resolve()) for name in ("chelsea.png", "chelsea-q85.jpg", "chelsea-crop2.png")]
    assert all(p in cluster_of for p in cat) and len({cluster_of[p] for p in cat}) == 1, near
    others = {str((root / name).resolve()) for name in ("coffee.png", "astronaut.png")}
    assert not others & cluster_of.keys(), near


def test_planted_label_errors_rank_above_the_correct_labels(audited, found):
    """On 60 cells a few genuine ELPV cells look as wrong as the planted ones: the planted ones must all be
    among the first 2 x PLANTED of 60 and flagged, with the defective class suggested."""
    planted = rel(audited[2]["planted"])
    rows = found.tables["label_errors"].rows
    ranked = [str(Path(r[1]).resolve()) for r in rows]
    assert planted <= set(ranked[: 2 * PLANTED]), rows[: 2 * PLANTED]
    assert all(r[6] and r[3] == "defective" for r in rows if str(Path(r[1]).resolve()) in planted)


def test_the_label_check_uses_the_classifier_cross_validation_shows_best_and_says_which(audited, found):
    """#28 point 1: by default the candidates are compared by CV balanced accuracy, the best one ranks, and
    the audit says which it is and its score (the page shows the notes; the CLI prints them)."""
    from featx.auditing._labels import CANDIDATES

    note = next(n for n in found.notes if n.startswith("label errors ranked by"))
    scores = {name: float(note.split(f"{name} ")[1][:5]) for name in CANDIDATES if f"{name} " in note}
    chosen = note.split("ranked by ")[1].split(",")[0]
    assert chosen in CANDIDATES and set(scores) == set(CANDIDATES) - {chosen}, note
    assert float(note.split("CV balanced accuracy ")[1][:5]) >= max(scores.values()), note
    forced = audit(audited[1], clf="knn", n_jobs=1, progress=False)
    assert any(n.startswith("label errors ranked by knn, CV balanced accuracy") and "given by --clf" in n for n in forced.notes)


def test_beyond_its_size_limit_auto_takes_logreg_alone_and_says_so(audited, monkeypatch):
    """linsvm's fits grow faster than the images: beyond AUTO_ALL_ROWS, auto ranks by logreg."""
    from featx.auditing import _labels

    monkeypatch.setattr(_labels, "AUTO_ALL_ROWS", 20)
    note = next(n for n in audit(audited[1], n_jobs=1, progress=False).notes if n.startswith("label errors ranked by"))
    assert note.startswith("label errors ranked by logreg, CV balanced accuracy ") and "auto takes it alone beyond 20 images" in note, note


def test_auto_says_why_it_compared_one_when_the_other_cannot_be_calibrated(audited, monkeypatch):
    """Too few images per class to Platt-scale linsvm: auto ranks by logreg and says why (not "beyond N images")."""
    from featx.auditing import _labels
    from featx.errors import BadInputError

    real = _labels.searched

    def searched(x, y, clf, *rest):
        if clf == "linsvm":
            raise BadInputError("LinearSVC gives probabilities by Platt scaling, which needs more images per class than 2")
        return real(x, y, clf, *rest)

    monkeypatch.setattr(_labels, "searched", searched)
    note = next(n for n in audit(audited[1], n_jobs=1, progress=False).notes if n.startswith("label errors ranked by"))
    assert note.startswith("label errors ranked by logreg") and "cannot be Platt-scaled with so few images" in note, note


def test_a_small_ambiguous_class_does_not_crowd_the_planted_errors_out_of_the_top(audited, tmp_path):
    """With classes of unequal size, a small class's images get low probabilities of their label whatever their
    label: the ranking subtracts each class's mean self-confidence first (cleanlab's adjust_pred_probs). Measured
    here: with 8 possibly-defective cells beside the 35 functional and 30 defective, the planted errors ranked
    3, 10, 11, 14 and 16 without it, 3, 4, 6, 7 and 9 with it (ELPV with 50 planted: 48% in the top 50, then 60%)."""
    root, store, facts = audited
    data = tmp_path / "cells"
    for folder in ("functional", "defective"):
        shutil.copytree(root / folder, data / folder)
    (data / "possibly").mkdir()
    for path in facts["possibly"]:
        shutil.copyfile(path, data / "possibly" / Path(path).name)
    shutil.copyfile(store, tmp_path / "store.h5")
    featx.extract(data, store=tmp_path / "store.h5", progress=False)  # the 8 new cells only: contents are keys
    rows = audit(tmp_path / "store.h5", data=data, n_jobs=1, progress=False).tables["label_errors"].rows
    planted = {str(data / "functional" / Path(p).name) for p in facts["planted"]}
    ranks = sorted(i for i, r in enumerate(rows, 1) if str(Path(r[1]).resolve()) in rel(planted))
    assert ranks[-1] <= 2 * PLANTED, (ranks, [r[1:4] for r in rows[: 2 * PLANTED]])


def test_alike_label_errors_are_scored_by_models_refitted_without_them(audited, found):
    """#28: the PLANTED clearly defective cells filed as functional look alike, so the models of the folds that
    hold some of them learn that such cells are functional. By default the classifier is refitted twice without
    cleanlab's likely errors, which lowers the planted cells' out-of-fold probability of their wrong label
    (measured on this set: mean 0.222 without refitting, 0.135 after; the other cells' 0.65 and 0.69), and the
    audit says so."""
    from featx.auditing._labels import REFIT_ROUNDS

    planted = rel(audited[2]["planted"])
    p_label = [r[4] for r in found.tables["label_errors"].rows if str(Path(r[1]).resolve()) in planted]
    assert len(p_label) == PLANTED and np.mean(p_label) < 0.18, p_label
    note = next(n for n in found.notes if n.startswith("label errors ranked by"))
    assert REFIT_ROUNDS == 2 and "; refitted twice without its likely label errors (" in note, note


def test_photographs_among_cells_are_the_top_outliers(found):
    ranked = [Path(r[1]).name for r in found.tables["outliers"].rows]
    assert {"coffee.png", "astronaut.png"} <= set(ranked[:5])


def test_unlabelled_files_get_the_label_free_findings(audited):
    root, store, _ = audited
    result = audit(store, data=[root / name for name in ("chelsea.png", "chelsea-q85.jpg", "coffee.png", "astronaut.png")])
    assert "label_errors" not in result.tables and result.n_files == 4
    assert {r[0] for r in result.tables["near_duplicates"].rows} == {1}


def test_rows_that_hold_nan_are_left_out_of_the_audit_by_name(audited, found):
    """A store damaged by an earlier version made the label check raise scikit-learn's "Input X contains NaN"."""
    import h5py

    from featx.features._store import FeatureStore

    root, store, facts = audited
    damaged = Path(shutil.copy(store, store.with_name("nan.h5")))  # beside it: its paths are relative to it
    try:
        with FeatureStore.open(damaged) as opened:
            name, (row, _) = next((p, e) for p, e in sorted(opened.files().items()) if p.endswith(facts["planted"][0].split("/")[-1]))
        with h5py.File(damaged, "r+") as h5:
            h5["features"][row, 3] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("error", featx.errors.StoreWarning)  # said once, as a note: not again by fit's split
            result = audit(damaged, n_jobs=1, progress=False, pixels=False)
    finally:
        damaged.unlink()
    assert f"the features of 1 file(s) in {damaged} hold NaN or infinity ({name}): featx info --check" in " ".join(result.notes)
    assert result.n_files == found.n_files - 1 and "label_errors" in result.tables


def test_near_duplicates_across_a_given_split_are_a_leak(audited, tmp_path):
    root = audited[0]
    split = tmp_path / "split.csv"
    split.write_text(f"path,split\n{root / 'chelsea.png'},train\n{root / 'chelsea-q85.jpg'},test\n{root / 'coffee.png'},test\n")
    names = ("chelsea.png", "chelsea-q85.jpg", "coffee.png", "astronaut.png")
    near = audit(audited[1], data=[root / n for n in names], split_csv=split).tables["near_duplicates"].rows
    assert {(Path(r[1]).name, r[3], r[8]) for r in near} == {("chelsea.png", "train", True), ("chelsea-q85.jpg", "test", True)}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_writes_findings_and_a_clean_csv_that_featx_extract_reads_and_changes_nothing(audited, tmp_path):
    root, store, facts = audited
    before = snapshot(root.parent)  # the inputs, the store and its lock file
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["audit", str(store), "--out", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert snapshot(root.parent) == before
    assert {p.name for p in out.iterdir()} == {"exact_duplicates.csv", "near_duplicates.csv", "outliers.csv",
                                               "label_errors.csv", "clean.csv", "findings.csv", "audit.html",
                                               "manifest.json", *(f"{name}.csv" for name in IMAGE_FINDINGS)}
    flagged = re.search(r"files flagged: (.*)", result.output).group(1)  # "duplicates 2, near-duplicates 3, ..."
    with open(out / "findings.csv", newline="") as f:
        listed = Counter(row["finding"] for row in csv.DictReader(f))
    said = dict(part.rsplit(" ", 1) for part in flagged.split(", "))
    assert said == {kind: str(listed[kind]) for kind in KINDS} and sum(listed.values()) > 0
    assert "label errors ranked by" in result.output  # the chosen classifier and its CV score
    page = (out / "audit.html").read_text()
    html5lib.HTMLParser(strict=True).parse(page)
    assert "label errors ranked by" in page
    assert page.count("<h2>") == 5 + len(IMAGE_FINDINGS) and page.count("data:image/jpeg;base64,") >= 10
    with open(out / "clean.csv", newline="") as f:
        kept = {row["path"]: row["label"] for row in csv.DictReader(f)}
    assert not rel(facts["planted"]) & rel(kept)  # label errors dropped
    assert not {root / "functional" / facts["twin"], root / "defective" / f"copy-of-{facts['twin']}"} & {Path(p) for p in kept}
    assert len({"chelsea.png", "chelsea-q85.jpg", "chelsea-crop2.png"} & {Path(p).name for p in kept}) == 1  # one per cluster
    clean_store = tmp_path / "clean.h5"
    result = CliRunner().invoke(main, ["extract", str(out / "clean.csv"), "--store", str(clean_store), "-q"])
    assert result.exit_code == 0, result.output
    features = featx.load_features(clean_store)
    assert {str(Path(p).resolve()): features.classes[l] if l >= 0 else "" for p, l in zip(features.paths, features.labels)} == {
        str(Path(p).resolve()): label for p, label in kept.items()
    }


def test_cli_refuses_an_unknown_finding_to_drop(audited):
    result = CliRunner().invoke(main, ["audit", str(audited[1]), "--drop", "typos"])
    assert result.exit_code == 2 and "unknown finding 'typos'" in result.output


def test_the_approximate_index_finds_the_exact_neighbours_and_never_the_row_itself():
    from featx.features._neighbours import nearest

    x = np.random.default_rng(0).gamma(0.5, 1, (3000, 64)).astype(np.float32)
    x[11] = x[10]  # identical rows: each must still be the other's neighbour, never its own
    (exact_sims, exact), (sims, found) = nearest(x, 5, exact=True), nearest(x, 5, exact=False)
    assert found.shape == (3000, 5) and not (found == np.arange(3000)[:, None]).any()
    assert found[10, 0] == 11 and found[11, 0] == 10
    assert (found[:, 0] == exact[:, 0]).mean() > 0.97
    np.testing.assert_allclose(sims[:, 0], exact_sims[:, 0], atol=1e-4)


def test_without_a_store_audit_names_its_own_argument(private_cache):
    """#25 point 9: audit suggested `--features STORE`, an option it does not have."""
    result = CliRunner().invoke(main, ["audit"])
    assert result.exit_code == 1 and "run featx extract first, or pass featx audit STORE" in result.output
    assert "--features" not in result.output


def test_the_summary_gives_each_finding_each_class_and_the_imbalance_first(audited, found):
    """#28 point 5: on the terminal and on the page's first section: files per finding, per class its files
    and share of likely label errors, largest class over smallest."""
    text = found.summary()
    flagged = len(found.dropped["label-errors"] & {p for p, label in zip(found.paths, found.labels) if label == "functional"})
    assert f"class functional: {30 + PLANTED} files, {flagged / (30 + PLANTED):.1%} likely label errors" in text, text
    assert "class defective: 31 files" in text and f"class imbalance (largest / smallest): {(30 + PLANTED) / 31:.1f}" in text
    assert f"label-errors {len(found.dropped['label-errors'])}" in text.splitlines()[1]
    page = (audited[0].parent / "page").joinpath("audit.html")
    found.write(page.parent)
    first = page.read_text().split("<h2>")[1]
    assert first.startswith("Summary") and "files flagged" in first and "likely label errors" in first and "Class imbalance" in first


def test_the_imbalance_of_classes_of_one_size_names_no_largest_class():
    """It said "1.0 (defective 20 / defective 20)"."""
    from featx.auditing._audit import Audit

    def imbalance(classes):
        return Audit("s.h5", 0, 0, {}, {}, [], {}, [], classes).imbalance()

    assert imbalance({"defective": 20, "functional": 20}) == "1.0 (every class 20)"
    assert imbalance({"defective": 10, "functional": 25}) == "2.5 (functional 25 / defective 10)"
    assert imbalance({"defective": 10}) == ""


@pytest.mark.parametrize("bad, message", [
    ({"threshold": 1.5}, r"audit: threshold=1.5 is not in \(0.0, 1.0\]"),
    ({"threshold": 0.0}, r"audit: threshold=0.0 is not in \(0.0, 1.0\]"),
    ({"neighbours": 0}, r"audit: neighbours=0 is not in \[1, inf\)"),
    ({"cv": 1}, r"--cv must be at least 2, not 1"),  # featx fit's checks
    ({"test_size": 1.0}, r"--test-size must be between 0 and 1, not 1.0"),
    ({"seed": -1}, r"--seed must be between 0 and 4294967295, not -1"),  # numpy's traceback before
    ({"n_jobs": 0}, r"--n-jobs 0 runs nothing"),
    ({"threshold": float("nan")}, r"audit: threshold=nan is not a finite number"),  # it found no near duplicate
    ({"neighbours": 2.5}, r"audit: neighbours=2.5 is not an integer"),
    ({"drop": ["typos"]}, "unknown finding 'typos'; valid names: duplicates"),
    ({"clf": "forest"}, "unknown classifier 'forest'; valid names: auto, logreg"),
])
def test_audit_refuses_a_bad_parameter_before_reading_the_store(tmp_path, bad, message):
    """One error kind per mistake (issue #26): a ParameterError naming the parameter, whatever the store."""
    with pytest.raises(ParameterError, match=message):
        featx.audit(tmp_path / "absent.h5", **bad)


def test_an_unlabelled_copy_conflicts_with_no_label_and_each_pair_counts_once(tmp_path):
    """A labelled cell and its unlabelled copy (a new, unsorted file): not a conflict, so the labelled one stays in
    clean.csv, and the copy, which has no label, is no label error; chelsea and its JPEG copy are one pair of
    near duplicates by embedding (both find the other among their neighbours: it was counted twice)."""
    from PIL import Image
    from skimage import data

    elpv, root = load_elpv(), tmp_path / "cells"
    mono = elpv.cell_type == "mono"
    for name, members in (("functional", np.flatnonzero(mono & (elpv.target == 0))[:6]),
                          ("defective", np.intersect1d(clearly_defective(elpv), np.flatnonzero(mono))[:6])):
        (root / name).mkdir(parents=True)
        for i in members:
            shutil.copyfile(elpv.filenames[i], root / name / Path(elpv.filenames[i]).name)
    original = sorted((root / "functional").iterdir())[0]
    shutil.copyfile(original, root / "unsorted.png")
    Image.fromarray(data.chelsea()).save(root / "chelsea.png")
    Image.fromarray(data.chelsea()).save(root / "chelsea-q85.jpg", quality=85)
    store = featx.extract(root, store=tmp_path / "store.h5", progress=False).store
    result = audit(store, n_jobs=1)
    rows = result.tables["exact_duplicates"].rows
    assert rel(r[1] for r in rows) == rel([original, root / "unsorted.png"]) and not any(r[4] for r in rows)
    assert result.counts["exact duplicate groups with conflicting labels"] == 0
    assert str(original.resolve()) in rel(path for path, _ in result.clean)
    assert str((root / "unsorted.png").resolve()) not in rel(path for path, _ in result.clean)  # a copy: flagged
    assert all(r[2] for r in result.tables["label_errors"].rows)
    assert result.counts["near-duplicate pairs by embedding"] == 1, result.tables["near_duplicates"].rows


def test_a_rerun_into_the_same_out_leaves_no_file_of_the_last_and_never_writes_over_its_input(audited, tmp_path):
    """The audit's own clean.csv as --data into the same --out would be written over: refused, nothing changed. A
    rerun that finds no label errors (unlabelled photographs only) removed nothing: the last run's label_errors.csv
    stayed beside the new manifest, which does not list it."""
    from featx.outputs import check_manifest

    root, store, _ = audited
    out = tmp_path / "audit"
    first = CliRunner().invoke(main, ["audit", str(store), "--out", str(out), "-j", "1"])
    assert first.exit_code == 0 and (out / "label_errors.csv").is_file(), first.output
    before = snapshot(out)
    again = CliRunner().invoke(main, ["audit", str(store), "--out", str(out), "--data", str(out / "clean.csv")])
    assert again.exit_code == 1 and "it holds the input" in again.output and snapshot(out) == before, again.output
    photos = [a for name in ("chelsea.png", "chelsea-q85.jpg", "coffee.png") for a in ("--data", str(root / name))]
    second = CliRunner().invoke(main, ["audit", str(store), "--out", str(out), *photos])
    assert second.exit_code == 0, second.output
    assert not (out / "label_errors.csv").exists() and check_manifest(out / "manifest.json") == []
    assert {p.name for p in out.iterdir()} == {"manifest.json", *json.loads((out / "manifest.json").read_text())["files"]}
