"""`featx demo`: the whole path on real ELPV images; the accuracy it prints is that of the model it saved."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from featx.cli.demo import demo
from featx.cli.evaluate import evaluate
from html_checks import embedded_images, gallery, no_external_url, parse_html


def run_demo(tmp_path: Path, monkeypatch, *args: str) -> tuple[str, float]:
    """Run the demo in tmp_path; check its accuracy against `featx evaluate` of its model on its test part."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(demo, ["-q", *args])
    assert result.exit_code == 0, result.output
    printed = re.search(r"^4-class accuracy: ([\d.]+)% on (\d+) test cells .*82\.44%.*88\.42%", result.output, re.M)
    assert printed, result.output
    assert re.search(r"^next:  featx evaluate featx-demo/featx-svm.skops featx-demo/test.csv", result.output, re.M)
    evaluated = CliRunner().invoke(evaluate, ["featx-demo/featx-svm.skops", "featx-demo/test.csv", "-q", "--report", "ev"])
    assert evaluated.exit_code == 0, evaluated.output
    saved = json.loads(Path("ev.json").read_text())["metrics"]
    assert saved["n"] == int(printed[2])
    assert f"{100 * saved['accuracy']:.2f}" == printed[1]
    text = Path("featx-demo/featx-svm.skops.html").read_text()
    document = parse_html(text)
    assert embedded_images(document) and no_external_url(text) and gallery(document, "Mistakes") is not None
    return result.output, saved["accuracy"]


def test_demo_on_a_reduced_set_and_its_rerun(tmp_path, monkeypatch):
    output, _ = run_demo(tmp_path, monkeypatch, "--per-class", "12")
    assert "48 ELPV cells" in output and "48 extracted" in output
    assert output.index("report: featx-demo/featx-svm.skops.html") < output.index("4-class accuracy")
    rerun, _ = run_demo(tmp_path, monkeypatch, "--per-class", "12")
    assert "0 extracted, 48 already in the store" in rerun and "not fitted again" in rerun and "fitting:" not in rerun
    assert rerun.split("report:")[1] == output.split("report:")[1]  # the saved model's own report, as printed then
    changed, _ = run_demo(tmp_path, monkeypatch, "--per-class", "13")  # more images: fitted again
    assert "52 ELPV cells" in changed and "fitting:" in changed and "not fitted again" not in changed
    assert len(list((tmp_path / "featx-demo" / "elpv").glob("*/*.png"))) == 52  # the 12-per-class copies pruned


@pytest.mark.slow
def test_full_demo_under_the_paper_protocol(tmp_path, monkeypatch):
    output, accuracy = run_demo(tmp_path, monkeypatch)
    assert "2,624 ELPV cells" in output and "stratified by class and cell type" in output
    assert "on 656 test cells" in output
    assert accuracy > 0.75  # docs/benchmarks.md: 300-gem-late, 79.8 ± 1.1% over three splits


@pytest.mark.slow
def test_demo_compare_prints_the_winner_and_its_margin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(demo, ["-q", "--per-class", "12", "--compare"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^winner: .+, \d+\.\d\d points of CV above .+; 4-class accuracy on the test part \d+\.\d\d%",
                     result.output, re.M), result.output
    assert (tmp_path / "featx-demo" / "compare" / "model.skops").is_file()
    assert "next:  featx evaluate featx-demo/compare/model.skops featx-demo/test.csv" in result.output  # the winner
