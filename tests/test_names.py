"""File names as the OS gives them: any bytes (#25 point 5) and the same file named several times (point 9)."""
from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from click.testing import CliRunner
from featx.cli import main
from html_checks import parse_html

ODD = os.fsdecode(b"cell\xff.png")  # byte 0xff is not UTF-8: Python holds it as the surrogate \udcff


@pytest.fixture(scope="module")
def model(elpv_folder, tmp_path_factory) -> Path:
    """A logistic regression on the 20 real ELPV cells of elpv_folder."""
    from featx.classify._fitting import fit
    from featx.features._extraction import extract

    root = tmp_path_factory.mktemp("names")
    report = extract(elpv_folder, store=root / "cells.h5", progress=False)
    bundle, _ = fit(report.store, "logreg", cv=2, test_size=0.4)
    return bundle.save(root / "m.skops")


@pytest.fixture
def odd_folder(elpv_folder, tmp_path) -> Path:
    """Two real cells per class, one of them renamed to a name that is not UTF-8."""
    folder = tmp_path / "odd"
    for cls in sorted(p for p in elpv_folder.iterdir()):
        (folder / cls.name).mkdir(parents=True)
        for cell in sorted(cls.iterdir())[:2]:
            shutil.copy(cell, folder / cls.name / cell.name)
    cell = sorted((folder / "defective").iterdir())[0]
    cell.rename(cell.with_name(ODD))
    return folder


def links_to(page: Path) -> list[bytes]:
    """Every link target of the page, as the bytes of the path it names."""
    return [unquote_to_bytes(a.get("href")) for a in parse_html(page.read_text()).iter("a")]


def test_predict_report_and_csv_carry_a_name_that_is_not_utf8(model, odd_folder, tmp_path):
    out, page = tmp_path / "p.csv", tmp_path / "p.html"
    result = CliRunner().invoke(main, ["predict", str(model), str(odd_folder), "-q", "--out", str(out), "--report", str(page)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8", "surrogateescape"))))
    assert os.path.join(str(odd_folder), "defective", ODD) in [row[0] for row in rows]
    assert "cell\\xff.png" in page.read_text()
    target = [t for t in links_to(page) if t.endswith(b"cell\xff.png")]
    assert target and all((tmp_path / os.fsdecode(t)).is_file() for t in target)


def test_evaluate_report_carries_a_name_that_is_not_utf8(model, odd_folder, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(model), str(odd_folder), "-q", "--report", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    page = tmp_path / "ev.html"
    assert page.stat().st_size > 0 and "cell\\xff.png" in page.read_text()
    assert any((tmp_path / os.fsdecode(t)).is_file() for t in links_to(page) if t.endswith(b"cell\xff.png"))


def test_predict_has_a_row_each_time_a_file_is_named(model, elpv_folder, tmp_path):
    """The README: a row for every input file, its path as given; a file named three times had one row."""
    cell = str(sorted(elpv_folder.rglob("*.png"))[0])
    other = str(sorted(elpv_folder.rglob("*.png"))[-1])
    result = CliRunner().invoke(main, ["predict", str(model), cell, other, cell, cell, "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))[1:]
    assert [row[0] for row in rows] == [cell, other, cell, cell]
    assert rows[0] == rows[2] == rows[3] != rows[1]


def test_audit_writes_listings_that_name_a_file_that_is_not_utf8(odd_folder, tmp_path):
    """Its CSVs were strict UTF-8: the audit failed after all its analysis; now each listing featx writes names
    the same files when featx reads it back (clean.csv for extract, findings.csv for map --color finding)."""
    from featx.auditing import read_findings
    from featx.features._extraction import extract
    from featx.images._inputs import find_images

    odd = os.path.join(str(odd_folder), "defective", ODD)
    shutil.copy(odd, Path(odd).with_name("a_copy.png"))
    report = extract(odd_folder, store=tmp_path / "odd.h5", progress=False)
    result = CliRunner().invoke(main, ["audit", str(report.store), "--out", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    copy = str(Path(odd).with_name("a_copy.png"))  # sorts first: the copy is kept, the odd name is the finding
    assert read_findings(tmp_path / "audit")[odd] == "duplicates"
    clean = find_images(tmp_path / "audit" / "clean.csv").paths
    assert copy in clean and odd not in clean and set(clean) < set(find_images(odd_folder).paths)
