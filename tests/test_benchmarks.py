"""The benchmarks run and print their comparison (figures are read by people, never asserted)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run(script: str, *args: str, env: dict | None = None) -> str:
    """The benchmark's printed output (shown in the test log)."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                         check=True, env=env).stdout
    print(out)
    return out


@pytest.mark.slow
def test_extract_throughput_prints_a_row_of_rates_and_ratios_per_model():
    out = run("extract_throughput.py", "--images", "32", "--sample", "16", "--models", "efficientnet_lite0,mobilenet_v3_small",
              "--photos", "14", "--web", "14", "--rerun-files", "300")
    for model in ("efficientnet_lite0", "mobilenet_v3_small"):
        assert re.search(rf"^{model} +(\d+\.\d +){{3}}\d+\.\d\d +\d+\.\d\d ", out, re.MULTILINE), out
    for row in ("12 MP JPEG", "web JPEG 500x375"):
        assert re.search(rf"^{row} \(14\) +(\d+\.\d +){{4}}(\d+\.\d\d +){{2}}\d+\.\d\d$", out, re.MULTILINE), out
    assert re.search(r"^rerun of 300 files \(14 contents, .* rerun \d+\.\d\d s, \d+\.\d MB read", out, re.MULTILINE), out


@pytest.mark.slow
def test_html_report_benchmark_prints_both_times_and_their_ratio():
    out = run("html_report.py", "--rows", "5000")
    assert re.search(r"^5,000 rows: JSON \+ PNG \d+\.\d\d s, with the HTML page \d+\.\d\d s \(\d+\.\d\dx\)", out, re.M), out


@pytest.mark.slow
def test_elpv_finetune_prints_the_four_fine_tuning_rows_and_a_rerun_reuses_the_network(tmp_path):
    args = ["--finetune", "--quick", "--out", str(tmp_path / "runs"), "--option", "epochs=1", "--option", "image_size=48",
            "--option", "batch_size=16"]
    env = {**os.environ, "FEATX_CACHE": str(tmp_path / "cache")}
    out = run("elpv.py", *args, env=env)
    for name in ("fine-tuned head", "SVM on fine-tuned features", "fine-tuned head + d4", "SVM on fine-tuned features + d4"):
        assert re.search(rf"^\| {re.escape(name)} \|( \d+\.\d\d ± \d+\.\d\d \|){{3}}", out, re.MULTILINE), out
    network = tmp_path / "runs" / "lite0-seed0.safetensors"
    trained = network.stat().st_mtime_ns
    again = run("elpv.py", *args, env=env)
    assert network.stat().st_mtime_ns == trained  # not trained again
    rows = [[line for line in text.splitlines() if line.startswith("| fine-tuned") or line.startswith("| SVM")]
            for text in (out, again)]
    assert len(rows[0]) == 4 and rows[0] == rows[1]


@pytest.mark.slow
def test_svm_selection_benchmark_prints_both_searches_and_their_ratio():
    out = run("svm_selection.py", "--per-class", "25")
    assert re.search(r"^shared kernels \(featx\) +\d+\.\d s CPU  ratio \d\.\d\d  largest CV score difference", out, re.M), out


@pytest.mark.slow
def test_finetune_step_benchmark_prints_rates_and_ratios_against_all_layers():
    out = run("finetune_step.py", "--sizes", "32", "--layers", "blocks.1,blocks.2", "--steps", "1")
    assert re.search(r"^  32  all layers +\d+\.\d  1\.00$", out, re.M), out
    for layer in ("blocks.1", "blocks.2"):
        assert re.search(rf"^  32  {re.escape(layer)} +\d+\.\d  \d\.\d\d$", out, re.M), out


@pytest.mark.slow
def test_elpv_compare_quick_prints_each_seeds_leaderboard_and_the_winners_row(tmp_path):
    env = {**os.environ, "FEATX_CACHE": str(tmp_path / "cache")}
    out = run("elpv.py", "--compare", "--quick", "--out", str(tmp_path / "runs"), env=env)
    assert re.search(r"^ 1  efficientnet_lite0 64px blocks\.5,blocks\.6,bn2 gem / svm +0\.\d{3} ± 0\.\d{3}", out, re.M), out
    assert re.search(r"^\| featx compare winner \| \d+\.\d\d ± \d+\.\d\d \|", out, re.M), out
