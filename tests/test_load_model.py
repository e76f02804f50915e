"""`featx.load_model`: one interface for a model from featx fit and a network from featx finetune (issue #26):
both predict and evaluate with the same methods and give what each gave through its own path before."""
import numpy as np
import pytest

import featx
from featx.classify._bundle import ModelBundle
from featx.errors import ParameterError
from featx.finetuning._apply import FineTuned
from test_compat_main import EXACT, EXPECTED, cells, folder  # noqa: F401 (fixture)


def test_a_fitted_model_predicts_through_load_model_as_it_did(folder):
    model = featx.load_model(folder / "model.skops")
    assert isinstance(model, ModelBundle)
    predictions, sources = model.predict(cells(folder), store=folder / "store.h5", workers=0, progress=False)
    assert predictions.predicted == EXPECTED["model.skops"]["predicted"] and sources.failures == []
    np.testing.assert_allclose(predictions.scores, EXPECTED["model.skops"]["probabilities"], rtol=0, atol=EXACT)
    report, sources = model.evaluate([folder / "cells"], store=folder / "store.h5", workers=0, progress=False)
    assert report.metrics["n"] == len(EXPECTED["cells"]) and "0 extracted" in sources.summary()
    with pytest.raises(ParameterError, match="tta='d4' applies to a fine-tuned network"):
        model.predict(cells(folder), tta="d4")


def test_a_finetuned_network_predicts_through_load_model_as_it_did(folder):
    model = featx.load_model(folder / "finetuned.safetensors")
    assert isinstance(model, FineTuned)
    expected = EXPECTED["finetuned.safetensors"]
    predictions, sources = model.predict(cells(folder), workers=0, device="cpu", progress=False)
    np.testing.assert_allclose(predictions.scores, expected["probabilities"], rtol=0, atol=EXACT)
    assert predictions.predicted == [expected["classes"][i] for i in np.argmax(expected["probabilities"], 1)]
    assert sources.failures == [] and sources.summary().startswith(f"{len(EXPECTED['cells'])} files, 0 failed")
    report, sources = model.evaluate([folder / "cells"], workers=0, device="cpu", progress=False)
    assert report.metrics["n"] == len(EXPECTED["cells"]) and sources.failures == []
    with pytest.raises(ParameterError, match="a fine-tuned network is its own weights file"):
        model.predict(cells(folder), weights="w.safetensors")
