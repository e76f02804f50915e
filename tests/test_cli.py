"""The featx command: lazy help, exit codes, summaries."""
import subprocess
import sys

from click.testing import CliRunner
from featx.cli import main

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--workers", "0", "-q"]


def test_help_is_instant_and_imports_no_torch():
    code = "import sys; from featx.cli import main; sys.argv=['featx','--help']\ntry: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "extract" in out and out.strip().endswith("False False")


def test_extract_then_info(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--store", str(store), *FAST])
    assert result.exit_code == 0, result.output
    assert "20 files, 20 unique images: 20 extracted" in result.output
    info = CliRunner().invoke(main, ["info", str(store)])
    assert info.exit_code == 0
    assert "20 unique images x 576 features" in info.output and "functional: 5" in info.output


def test_strict_exits_1_but_keeps_good_rows(elpv_copy, tmp_path):
    (elpv_copy / "functional" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    store = tmp_path / "s.h5"
    result = CliRunner().invoke(main, ["extract", str(elpv_copy), "--store", str(store), "--strict", *FAST])
    assert result.exit_code == 1
    assert "broken.png" in result.output and "1 file failed" in result.output
    assert "20 unique images x" in CliRunner().invoke(main, ["info", str(store)]).output


def test_usage_and_user_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["extract"]).exit_code == 2
    assert runner.invoke(main, ["extract", str(tmp_path), "--pooling", "median"]).exit_code == 2
    unknown = runner.invoke(main, ["extract", str(tmp_path), "--model", "vgg17"])
    assert unknown.exit_code == 2 and "unknown model 'vgg17'" in unknown.output and "Traceback" not in unknown.output
    typo = runner.invoke(main, ["extract", str(tmp_path), "--model", "efficientnet-lite0"])
    assert typo.exit_code == 2 and typo.stderr.strip().endswith("; closest: efficientnet_lite0, efficientnet_lite2, "
                                                                 "efficientnet_lite1"), typo.output
    empty = runner.invoke(main, ["extract", str(tmp_path)])
    assert empty.exit_code == 1 and "no images found" in empty.output
    (tmp_path / "cells").mkdir()  # a weights file that does not exist and a bad regex are usage errors, as documented
    missing = runner.invoke(main, ["extract", str(tmp_path / "cells"), "--weights", "nope.pth"])
    assert missing.exit_code == 2 and missing.stderr.endswith("Error: weights file not found: nope.pth\n"), missing.output
    pattern = runner.invoke(main, ["extract", str(tmp_path / "cells"), "--label-pattern", "(.+"])
    assert pattern.exit_code == 2 and "Error: invalid --label-pattern '(.+'" in pattern.stderr, pattern.output


def test_missing_weights_offline_is_one_clear_line(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_OFFLINE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "resnet50", "-q", "--offline"])
    assert result.exit_code == 1 and "Traceback" not in result.output and len(result.stderr.splitlines()) == 1
    assert "resnet50-11ad3fa6.pth" in result.output and "--weights FILE" in result.output
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in result.output
    assert str(tmp_path / "hub" / "checkpoints") in result.output and "offline" in result.output


def test_models_says_here_will_download_or_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_OFFLINE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"cached")

    def listing(*options):
        result = CliRunner().invoke(main, ["models", *options])
        assert result.exit_code == 0
        return {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}

    online, offline = listing(), listing("--offline")
    assert list(online) == list(offline)  # --offline changes the words, not the list
    for lines in online, offline:
        assert "1280" in lines["efficientnet_lite0"] and "here (shipped)" in lines["efficientnet_lite2"]
        assert "here (cached)" in lines["resnet18"] and "2048" in lines["resnet50"]
    assert "will download (528 MB)" in online["vgg16"] and "unavailable offline" in offline["vgg16"]
