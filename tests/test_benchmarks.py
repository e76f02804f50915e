"""The benchmarks run and print their comparison (figures are read by people, never asserted)."""
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
         "--models", "efficientnet_lite0,mobilenet_v3_small"],
        capture_output=True, text=True, check=True,
    ).stdout
    print(out)
    for model in ("efficientnet_lite0", "mobilenet_v3_small"):
        assert re.search(rf"^{model} +(\d+\.\d +){{3}}\d+\.\d\d +\d+\.\d\d ", out, re.MULTILINE), out


@pytest.mark.slow
def test_html_report_benchmark_prints_both_times_and_their_ratio():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "html_report.py"), "--rows", "5000"], capture_output=True, text=True, check=True
    ).stdout
    print(out)
    assert re.search(r"^5,000 rows: JSON \+ PNG \d+\.\d\d s, with the HTML page \d+\.\d\d s \(\d+\.\d\dx\)", out, re.M), out
