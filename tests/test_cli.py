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
    empty = runner.invoke(main, ["extract", str(tmp_path)])
    assert empty.exit_code == 1 and "no images found" in empty.output


def test_missing_weights_is_one_clear_line(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "resnet50", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "resnet50-11ad3fa6.pth" in result.output and "--weights FILE" in result.output


def test_models_lists_availability(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "1280" in lines["efficientnet_lite0"] and "available" in lines["efficientnet_lite0"]
    assert "missing" in lines["vgg16"] and "2048" in lines["resnet50"]
