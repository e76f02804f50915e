"""featx finetune's options come from FinetuneConfig's fields, and its mistakes are the same error kinds as
featx extract's (#26): no training here, every run stops before decoding."""
import subprocess
import sys
from dataclasses import fields

import click
import pytest
from click.testing import CliRunner
from featx.cli import main

from featx.errors import ParameterError, UnknownNameError
from featx.finetuning._config import FinetuneConfig
from featx.names import DEFAULT_MODEL


def test_every_config_field_is_an_option_with_its_default_choices_and_help():
    from cli.finetune import finetune

    params = {p.name: p for p in finetune.params}
    assert params["model"].default == DEFAULT_MODEL
    for f in fields(FinetuneConfig):
        option, setting = params[f.name], f.metadata["setting"]
        assert option.opts[0] == "--" + f.name.replace("_", "-") and option.default == f.default, f.name
        assert option.help == setting.help, f.name
        if setting.choices:
            assert tuple(option.type.choices) == setting.choices, f.name
        if setting.low is not None:
            assert isinstance(option.type, click.types._NumberRangeBase) and option.type.min == setting.low, f.name


def test_finetune_help_imports_no_torch():
    code = ("import sys; from featx.cli import main; sys.argv=['featx','finetune','--help']\n"
            "try: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--lr-ratio" in out and out.strip().endswith("False")


@pytest.mark.parametrize("options, error, message", [
    ({"batch_size": 1}, ParameterError, "batch_size must be at least 2, got 1"),
    ({"val_size": 1.0}, ParameterError, r"val_size must be in \[0, 1\), got 1.0"),
    ({"epochs": 0, "freeze_epochs": 0}, ParameterError, "at least one epoch is needed"),
    ({"epochs": "3"}, ParameterError, "epochs must be an integer, got '3'"),
    ({"augment": "rot90"}, UnknownNameError, "unknown augment 'rot90'; valid names: d4, flip, none"),
    ({"schedule": "step"}, UnknownNameError, "unknown schedule 'step'; valid names: onecycle, cosine"),
    ({"learning_rate": 0.1}, UnknownNameError, "unknown finetune option 'learning_rate'; valid names: epochs"),
    ({"lr": float("nan")}, ParameterError, "lr must be a finite number, got nan"),  # it trained a NaN network
    ({"jitter": float("inf")}, ParameterError, "jitter must be a finite number, got inf"),
    ({"freeze_until": ""}, ParameterError, "freeze_until must be a non-empty string, got ''"),  # recorded as ""
    ({"image_size": 5000}, ParameterError, r"image_size must be in \[8, 4096\], got 5000"),  # as extraction's range
])
def test_a_bad_value_is_a_parameter_error_naming_it(options, error, message):
    with pytest.raises(error, match=message):
        FinetuneConfig.of(**options)


def test_an_unknown_freeze_until_layer_is_the_error_of_an_unknown_extract_layer(elpv_folder, tmp_path):
    runner = CliRunner()
    tuned = runner.invoke(main, ["finetune", str(elpv_folder), "-o", str(tmp_path / "m.safetensors"),
                                 "--freeze-until", "blocks.99", "-q"])
    extracted = runner.invoke(main, ["extract", str(elpv_folder), "--layer", "blocks.99", "-o", str(tmp_path / "s.h5"),
                                     "-q", "-w", "0"])
    assert tuned.exit_code == extracted.exit_code == 2, tuned.output
    errors = [[line for line in r.output.splitlines() if line.startswith("Error:")] for r in (tuned, extracted)]
    assert errors[0] == errors[1] and len(errors[0]) == 1
    assert errors[0][0].startswith("Error: unknown layer of efficientnet_lite0 'blocks.99'; valid names: conv_stem, bn1")


def test_a_bad_ordinal_is_a_usage_error(elpv_folder, tmp_path):
    result = CliRunner().invoke(main, ["finetune", str(elpv_folder), "-o", str(tmp_path / "m.safetensors"),
                                       "--ordinal", "functional,defective", "-q"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "ordinal must name each class" in errors[0], result.output


def test_a_config_is_a_finetune_config_or_a_dict_of_its_fields():
    assert FinetuneConfig.of({"epochs": 3}, seed=2) == FinetuneConfig.of(epochs=3, seed=2)
    with pytest.raises(ParameterError, match="^config must be a FinetuneConfig or a dict of its fields, got list$"):
        FinetuneConfig.of([("epochs", 3)])


def test_nan_and_fractional_folds_are_usage_errors_before_any_training(elpv_folder, tmp_path):
    import featx

    result = CliRunner().invoke(main, ["finetune", str(elpv_folder), "-o", str(tmp_path / "m.safetensors"), "--lr", "nan"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and errors == ["Error: lr must be a finite number, got nan"], result.output
    with pytest.raises(ParameterError, match=r"^folds must be 0 \(none\) or an integer of at least 2, not 2.0$"):
        featx.finetune(elpv_folder, out=tmp_path / "m.safetensors", folds=2.0)
    assert not list(tmp_path.iterdir())
