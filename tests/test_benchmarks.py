"""The benchmarks run and print their comparison (figures are read by people, never asserted)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_extract_throughput_prints_both_rates_and_the_ratio():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "extract_throughput.py"), "--images", "64"],
        capture_output=True, text=True, check=True,
    ).stdout
    print(out)
    assert re.search(r"tutorial loop .*\d+\.\d images/s", out)
    assert re.search(r"featx extract .*\d+\.\d images/s", out)
    assert re.search(r"ratio featx / tutorial: +\d+\.\d+x", out)
