"""The benchmarks run and print their comparison (figures are read by people, never asserted)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_extract_throughput_prints_a_row_of_rates_and_ratios_per_model():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "extract_throughput.py"), "--images", "32", "--sample", "16",
         "--models", "efficientnet_lite0,mobilenet_v3_small", "--photos", "14", "--web", "14", "--rerun-files", "300"],
        capture_output=True, text=True, check=True,
    ).stdout
    print(out)
    for model in ("efficientnet_lite0", "mobilenet_v3_small"):
        assert re.search(rf"^{model} +(\d+\.\d +){{3}}\d+\.\d\d +\d+\.\d\d ", out, re.MULTILINE), out
    for row in ("12 MP JPEG", "web JPEG 500x375"):
        assert re.search(rf"^{row} \(14\) +(\d+\.\d +){{4}}(\d+\.\d\d +){{2}}\d+\.\d\d$", out, re.MULTILINE), out
    assert re.search(r"^rerun of 300 files \(14 contents, .* rerun \d+\.\d\d s, \d+\.\d MB read", out, re.MULTILINE), out


@pytest.mark.slow
def test_html_report_benchmark_prints_both_times_and_their_ratio():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "html_report.py"), "--rows", "5000"], capture_output=True, text=True, check=True
    ).stdout
    print(out)
    assert re.search(r"^5,000 rows: JSON \+ PNG \d+\.\d\d s, with the HTML page \d+\.\d\d s \(\d+\.\d\dx\)", out, re.M), out




@pytest.mark.slow
def test_elpv_finetune_prints_the_four_fine_tuning_rows(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "elpv.py"), "--finetune", "--quick", "--out", str(tmp_path / "runs"),
         "--option", "epochs=1", "--option", "image_size=48", "--option", "batch_size=16"],
        capture_output=True, text=True, check=True, env={**os.environ, "FEATX_CACHE": str(tmp_path / "cache")},
    ).stdout
    print(out)
    for name in ("fine-tuned head", "SVM on fine-tuned features", "fine-tuned head + d4", "SVM on fine-tuned features + d4"):
        assert re.search(rf"^\| {re.escape(name)} \|( \d+\.\d\d ± \d+\.\d\d \|){{3}}", out, re.MULTILINE), out


@pytest.mark.slow
def test_svm_selection_benchmark_prints_both_searches_and_their_ratio():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "svm_selection.py"), "--per-class", "25"], capture_output=True, text=True, check=True
    ).stdout
    print(out)
    assert re.search(r"^shared kernels \(featx\) +\d+\.\d s CPU  ratio \d\.\d\d  largest CV score difference", out, re.M), out
