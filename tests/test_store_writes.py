"""What a failed run leaves (#25 points 3 and 8d): no empty store, and one line for an unusable --weights file or
a damaged store."""
import os
import pickle
import zipfile

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from featx.cli import main

FAST = ["--model", "mobilenet_v3_small", "--engine", "torch", "--workers", "0", "-q"]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch marker",))


def test_weights_that_do_not_load_leave_no_store(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.zeros(2)}, "plain.safetensors")  # readable, but not this architecture's
    failed = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "plain.safetensors", *FAST])
    assert failed.exit_code == 1 and "do not fit this architecture" in failed.output, failed.output
    assert not any(p.suffix == ".h5" for p in tmp_path.rglob("*"))  # nothing for `featx fit` to trip on
    store = tmp_path / "w.h5"
    CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "plain.safetensors", "--store", str(store), *FAST])
    assert not store.exists()
    other = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "random", "--store", str(store), *FAST])
    assert other.exit_code == 0, other.output  # not "holds another feature space"


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda path: zipfile.ZipFile(path, "w").writestr("schema.json", "{}"),
         "expected a safetensors file or a PyTorch state dict saved with torch.save"),
        (lambda path: torch.save({"w": Payload()}, path), "is a pickle holding more than tensors (posix.system)"),
    ],
    ids=["zip", "pickle"],
)
def test_an_unreadable_weights_file_is_one_whole_line_and_leaves_no_store(elpv_folder, tmp_path, monkeypatch, write, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "junk.skops")
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "junk.skops", *FAST])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "junk.skops" in lines[0] and expected in lines[0], result.stderr
    assert lines[0].endswith("or a safetensors file") or lines[0].endswith(")")  # never cut mid-word
    assert not (tmp_path / "marker").exists() and not list(tmp_path.rglob("*.h5"))
