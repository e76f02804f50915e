"""Every subcommand given a missing path or an unreadable image ends in one line and its documented exit code
(2: a path that does not exist; 1: input that cannot be used), never a traceback (issue #25). Read-only outputs
are tested command by command in tests/test_outputs.py."""
from pathlib import Path

import pytest
from click.testing import CliRunner
from featx.cli import COMMANDS, main

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "-w", "0", "-q"]
JUNK = b"\x89PNG\r\n\x1a\n" + b"not really a PNG" * 64


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """cells/ (real ELPV cells), their store s.h5, logreg fitted on it as m.skops; bad/<class>/ holds only
    images that cannot be decoded, and junk.h5 is not a store."""
    from featx.datasets import write_elpv_folder

    root = tmp_path_factory.mktemp("no-traceback")
    write_elpv_folder(root / "cells", per_class=5)
    runner = CliRunner()
    assert runner.invoke(main, ["extract", str(root / "cells"), "--store", str(root / "s.h5"), *FAST]).exit_code == 0
    fitted = runner.invoke(main, ["fit", "-f", str(root / "s.h5"), "--cv", "2", "-o", str(root / "m.skops")])
    assert fitted.exit_code == 0, fitted.output
    for label in ("a", "b"):
        (root / "bad" / label).mkdir(parents=True)
        for i in range(2):
            (root / "bad" / label / f"{i}.png").write_bytes(JUNK)
    (root / "junk.h5").write_bytes(JUNK)
    return root


# subcommand -> (arguments with a missing path, arguments with unreadable images or a file that is not a store)
CASES = {
    "extract": (["{missing}"], ["{bad}", "--store", "{tmp}/x.h5", *FAST]),
    "info": (["{missing}"], ["{junk}"]),
    "fit": (["-f", "{missing}"], ["-f", "{junk}", "-o", "{tmp}/m.skops"]),
    "predict": (["{model}", "{missing}"], ["{model}", "{bad}", "-o", "{tmp}/p.csv"]),
    "evaluate": (["{model}", "{missing}"], ["{model}", "{bad}"]),
    "audit": (["{missing}"], ["{junk}", "--out", "{tmp}/audit"]),
    "viz": (["features", "{missing}"], ["features", "{bad}/a/0.png", "--model", "mobilenet_v3_small", "--weights",
                                        "random", "-o", "{tmp}/f.png"]),
    "compare": (["{missing}"], ["{bad}", "--out", "{tmp}/compare", "--engine", "torch", "-q"]),
    "export": (["{missing}"], ["{junk}", "--out", "{tmp}/e.parquet"]),
    "map": (["{missing}"], ["{junk}", "--out", "{tmp}/map.html"]),
    "similar": (["{missing}", "--store", "{store}"], ["{bad}/a/0.png", "--store", "{store}", "--out", "{tmp}/s.csv"]),
    "finetune": (["{missing}"], ["{bad}", "-o", "{tmp}/t.safetensors", "--epochs", "1", "--image-size", "32", "-w", "0"]),
}


def test_every_command_that_reads_input_is_covered():
    assert set(COMMANDS) - set(CASES) == {"demo", "models"}  # they take no input path


@pytest.mark.parametrize("kind", ["missing", "unreadable"])
@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_is_one_line_and_its_exit_code(work, tmp_path, command, kind):
    template = CASES[command][kind == "unreadable"]
    names = {"missing": work / "nowhere" / "x.png", "bad": work / "bad", "junk": work / "junk.h5",
             "model": work / "m.skops", "store": work / "s.h5", "tmp": tmp_path}
    args = [command, *(arg.format(**names) for arg in template)]
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, SystemExit), (args, result.exception)  # no exception escaped
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == (2 if kind == "missing" else 1), (args, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith(("Error", "Usage", "Try"))]
    assert errors and errors[-1].startswith("Error"), result.stderr
