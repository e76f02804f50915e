"""Extraction parameters checked once, against one table (featx.names.PARAMETERS), with one error kind per
mistake: `ParameterError` naming the parameter and the value (`UnknownNameError` for an unknown name), exit 2."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import featx
from featx.cli import main
from featx.errors import ParameterError, UnknownNameError
from featx.features import Extractor

SMALL = {"weights": "random", "engine": "torch"}
BAD = [  # (parameter, value, what the message names)
    ("model", "no_such_model", "model 'no_such_model'"),
    ("model", 3, "model must be .*, got 3"),
    ("layer", "blocks.99", "layer of mobilenet_v3_small 'blocks.99'"),
    ("layer", 7, "layer must be .*, got 7"),
    ("pooling", "median", "pooling 'median'"),
    ("tta", "rot90", r"\(tta\) 'rot90'"),
    ("engine", "tensorrt", "engine 'tensorrt'"),
    ("decode", "fast", "decode mode 'fast'"),
    ("image_size", 0, "image_size must be .*, got 0"),
    ("image_size", "300", "image_size must be .*, got '300'"),
    ("device", "tpu", "device 'tpu'"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_extractor_parameters_are_parameter_errors_naming_parameter_and_value(name, value, message):
    kind = UnknownNameError if isinstance(value, str) and name not in ("image_size", "device") else ParameterError
    with pytest.raises(kind, match=message):
        extractor = Extractor.create(**{"model": "mobilenet_v3_small", **SMALL, name: value})
        extractor.layer_widths()
        extractor.resolved_device()


@pytest.mark.parametrize("name, value, message", [
    *BAD, ("batch_size", 0, "batch_size must be .*, got 0"), ("cache", 3, "cache must be .*, got 3"),
    ("batch_size", 2.5, "batch_size must be .*, got 2.5"),
])
def test_the_transformer_checks_the_same_table_at_fit(name, value, message):
    with pytest.raises(ParameterError, match=message):
        featx.PretrainedFeatures(**{"model": "mobilenet_v3_small", **SMALL, name: value}).fit(["x.png"])


@pytest.mark.parametrize("name, value, message", [
    *BAD[:-1], ("dtype", "float8", "dtype 'float8'"), ("batch_size", 0, "batch_size must be .*, got 0"),
    ("workers", -1, "workers must be .*, got -1"), ("ray_actors", 0, "ray_actors must be .*, got 0"),
])
def test_extract_checks_the_same_table_before_extracting(name, value, message, elpv_folder, tmp_path):
    with pytest.raises(ParameterError, match=message):
        featx.extract(elpv_folder, **{"model": "mobilenet_v3_small", **SMALL, name: value},
                      store=tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("option", [["--layer", "nope"], ["--model", "nope"], ["--decode", "fast"], ["--tta", "x"]])
def test_an_unknown_name_is_exit_2_in_the_cli(option, elpv_folder, tmp_path):
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "-o", str(tmp_path / "s.h5"), "-q", *option])
    assert result.exit_code == 2, result.output

