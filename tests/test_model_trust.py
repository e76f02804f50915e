"""Loading a model file never runs code it holds (issue #25, points 0 and 1): skops trusts exactly the types
featx's models hold, a file named .skops is only read by skops, a pickle only with --unsafe-pickle. What a file
states is checked before it is used: a search tree is rebuilt, sizes are bounded, a pipeline must say its width."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.neighbors import KDTree, KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC
from click.testing import CliRunner, Result
from conftest import synthetic_space
from featx.cli import main

from featx.backbones._preprocessing import Preprocessing
from featx.classify._bundle import TRUSTED_TYPES, load_bundle, skops_io
from featx.classify._classifiers import CLASSIFIERS, platt_scaled
from featx.classify._fitting import fit
from featx.errors import BadInputError, FeatxError
from featx.features._store import FeatureStore
from featx.finetuning._apply import load_finetuned
from featx.images._content import KEY_LENGTH

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "-w", "0", "-q"]


def featx(*args) -> Result:
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """cells/ (20 real ELPV cells), their store s.h5 (576 features) and a logreg model m.skops fitted on it."""
    from featx.datasets import write_elpv_folder

    root = tmp_path_factory.mktemp("trust")
    write_elpv_folder(root / "cells", per_class=5)
    assert featx("extract", root / "cells", "--store", root / "s.h5", *FAST).exit_code == 0
    assert featx("fit", "-f", root / "s.h5", "--cv", "2", "-o", root / "m.skops").exit_code == 0
    return root


def low_dimensional_store(path: Path, source: Path) -> Path:
    """The first 8 features of `source`'s rows: knn indexes so few dimensions with a KD-tree."""
    with FeatureStore.open(source) as store:
        x, labels, _, classes = store.load()
    with FeatureStore.create_or_open(path, synthetic_space()) as store:
        store.commit(keys=[f"{i:0{KEY_LENGTH}d}" for i in range(len(x))], features=np.ascontiguousarray(x[:, :8]),
                     files=[(f"img{i}.png", i, int(label)) for i, label in enumerate(labels)], classes=list(classes))
    return path


def test_the_trusted_types_are_exactly_those_of_featx_models(work, tmp_path):
    io = skops_io()
    low = low_dimensional_store(tmp_path / "low.h5", work / "s.h5")
    held = set()
    for store in (work / "s.h5", low):
        with FeatureStore.open(store) as opened:
            x, labels = opened.rows(np.arange(opened.count("rows"))), opened.load()[1]
        for name in CLASSIFIERS:
            bundle, _ = fit(store, name, cv=2, test_size=0.25)
            path = bundle.save(tmp_path / f"{name}.skops")
            held |= set(io.get_untrusted_types(file=path))
            assert (load_bundle(path).pipeline.predict(x) == bundle.pipeline.predict(x)).all()
        calibrated = platt_scaled(LinearSVC(), labels, cv=5, seed=0).fit(x, labels)  # a linsvm member of compare's averaged fusion
        held |= set(io.get_untrusted_types(data=io.dumps(calibrated)))
    assert held == set(TRUSTED_TYPES)


def crafted_skops(model: Path, out: Path, marker: Path) -> Path:
    """A genuine featx model with one more node: a call of numpy.testing's runstring on code that creates
    `marker` (what a prefix rule such as "numpy." let through)."""
    io = skops_io()
    io.dump({"call": (f"import pathlib; pathlib.Path({str(marker)!r}).touch()", {})}, out.with_suffix(".tmp"))
    call = json.loads(zipfile.ZipFile(out.with_suffix(".tmp")).read("schema.json"))["content"]["call"]
    with zipfile.ZipFile(model) as z:
        schema, members = json.loads(z.read("schema.json")), {n: z.read(n) for n in z.namelist() if n != "schema.json"}
    schema["content"]["x"] = {"__class__": "runstring", "__module__": "numpy.testing._private.utils",
                              "__loader__": "ConstructorFromReduceNode", "content": call, "__id__": 1}
    schema["key_types"]["content"].append(schema["key_types"]["content"][0])
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
        for name, data in members.items():
            z.writestr(name, data)
    return out


def variant(model: Path, out: Path, **entries) -> Path:
    """`model` (a genuine featx model) with `entries` replacing or added to those it holds."""
    io = skops_io()
    io.dump({**io.load(model, trusted=list(TRUSTED_TYPES)), **entries}, out)
    return out


def test_a_crafted_knn_tree_is_rebuilt_never_read(work, tmp_path):
    """A knn whose KD-tree indexes rows far past its data (its types all trusted) crashed predict with a segfault:
    scikit-learn never checks a loaded tree. Loading rebuilds it from the model's own rows. In a fresh process:
    a crash would kill this one."""
    with FeatureStore.open(work / "s.h5") as store:
        x, labels = store.load()[:2]
    knn = KNeighborsClassifier(3, algorithm="kd_tree").fit(x, labels)
    genuine = variant(work / "m.skops", tmp_path / "knn.skops", pipeline=Pipeline([("clf", knn)]))
    state = list(knn._tree.__getstate__())
    state[1] = state[1] + 2**40  # idx_array: the rows of each leaf
    knn._tree.__setstate__(tuple(state))
    evil = variant(work / "m.skops", tmp_path / "evil.skops", pipeline=Pipeline([("clf", knn)]))
    command = [sys.executable, "-c", "from featx.cli import main; main()", "predict", str(evil), str(work / "cells"), "-q"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == featx("predict", genuine, work / "cells", "-q").stdout


def test_a_tree_outside_a_neighbours_model_is_refused(work, tmp_path):
    evil = variant(work / "m.skops", tmp_path / "evil.skops", x=KDTree(np.zeros((4, 2))))
    with pytest.raises(FeatxError, match="refusing to load .*evil.skops: it holds a search tree outside a neighbours"):
        load_bundle(evil)


GOOD = {"resize": 8, "crop": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.mark.parametrize("bad, message", [
    ({"crop": 60000}, "crop must be an integer from 1 to 4096, got 60000"),
    ({"resize": -5}, "resize must be an integer from 1 to 4096, got -5"),
    ({"resize": 8.5}, "resize must be an integer from 1 to 4096, got 8.5"),
    ({"interpolation": "__class__"}, "interpolation must be one of bilinear, bicubic, nearest, got '__class__'"),
    ({"mean": [0.5, float("nan"), 0.5]}, "mean must be three finite numbers, got \\(0.5, nan, 0.5\\)"),
    ({"std": [0.25, 0.25]}, "std must be three finite numbers > 0"),
    ({"std": [0.25, 0, 0.25]}, "std must be three finite numbers > 0"),
    ({"crop_mode": "random"}, "crop_mode must be one of center, squash"),
])
def test_the_preprocessing_a_file_states_is_checked(bad, message):
    with pytest.raises(BadInputError, match=f"^its preprocessing's {message}"):
        Preprocessing.from_dict({**GOOD, **bad})
    assert Preprocessing.from_dict(GOOD).as_dict() == GOOD


HUGE = {"resize": 60000, "crop": 60000}  # each decode worker tried 10.8 GB an image


def test_a_huge_crop_in_any_file_is_refused_in_one_line_naming_it(work, tmp_path):
    """A fine-tuned network, a store and a model state their preprocessing: checked as they are opened, before
    any image is decoded (the assertions on loading come first: without the check, the CLI would decode)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    finetuned = tmp_path / "ft.safetensors"
    with safe_open(Path(__file__).parent / "data" / "main-ec68bad" / "finetuned.safetensors", "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    featx_meta = json.loads(meta["featx"])
    save_file(tensors, finetuned, {**meta, "featx": json.dumps({**featx_meta,
                                                             "preprocessing": {**featx_meta["preprocessing"], **HUGE}})})
    space = load_bundle(work / "m.skops").space.as_dict()
    huge_space = json.dumps({**space, "preprocessing": {**space["preprocessing"], **HUGE}}, sort_keys=True)
    model = variant(work / "m.skops", tmp_path / "m.skops", feature_space=huge_space)
    store = tmp_path / "s.h5"
    shutil.copy(work / "s.h5", store)
    with h5py.File(store, "r+") as h5:
        h5.attrs["feature_space"] = huge_space
    said = "resize must be an integer from 1 to 4096, got 60000"
    with pytest.raises(FeatxError, match=f"{finetuned} is a damaged fine-tuned network .*{said}"):
        load_finetuned(finetuned)
    with pytest.raises(FeatxError, match=f"{model} is a damaged featx model .*{said}"):
        load_bundle(model)
    with pytest.raises(FeatxError, match=f"{store} is a damaged feature store: .*{said}"):
        FeatureStore.open(store)
    for path in (finetuned, model):
        result = featx("predict", path, work / "cells", "-q")
        assert result.exit_code == 1 and result.output.count("\n") == 1 and said in result.output


def test_a_pipeline_that_does_not_say_its_width_is_one_line(work, tmp_path):
    """A first step never fitted (a FunctionTransformer of a ufunc, all its types trusted) has no n_features_in_:
    predict and evaluate failed with a traceback where they size the features."""
    pipeline = load_bundle(work / "m.skops").pipeline
    model = variant(work / "m.skops", tmp_path / "m.skops",
                    pipeline=Pipeline([("f", FunctionTransformer(np.positive)), *pipeline.steps]))
    for command in ("predict", "evaluate"):
        result = featx(command, model, work / "cells", "-q")
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"{model} is a damaged featx model" in result.output and "n_features_in_" in result.output


def test_a_width_that_is_not_the_pipelines_is_one_line(work, tmp_path):
    """The width a model file states sizes the features of every image before any prediction: one written by
    hand past what the pipeline takes (10**12) would ask for arrays nothing can hold."""
    import json

    info = json.loads(skops_io().load(work / "m.skops", trusted=list(TRUSTED_TYPES))["info"])
    model = variant(work / "m.skops", tmp_path / "m.skops", info=json.dumps({**info, "width": 10**12}))
    result = featx("predict", model, work / "cells", "-q")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{model} is a damaged featx model" in result.output and "its pipeline takes" in result.output


class Payload:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_crafted_skops_model_runs_no_code(work, tmp_path, command):
    marker = tmp_path / "marker"
    evil = crafted_skops(work / "m.skops", tmp_path / "evil.skops", marker)
    with pytest.raises(FeatxError, match="refusing to load .*numpy.testing._private.utils.runstring"):
        load_bundle(evil)
    result = featx(command, evil, work / "cells", "-q")
    assert result.exit_code == 1 and not marker.exists()
    assert result.output.count("\n") == 1 and "refusing to load" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["evil.skops", "evil.joblib"])
def test_a_pickle_is_never_loaded_without_being_asked(work, tmp_path, name):
    marker = tmp_path / "marker"
    evil = tmp_path / name
    evil.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    result = featx("predict", evil, work / "cells", "-q")
    assert result.exit_code == 1 and not marker.exists()
    assert result.output.count("\n") == 1 and "is a pickle, not a skops file" in result.output
    assert "--unsafe-pickle" in result.output
    with pytest.raises(FeatxError, match="is a pickle"):
        load_bundle(evil)
    assert not marker.exists()
    if name.endswith(".skops"):  # a .skops file is only ever read by skops, even with --unsafe-pickle
        result = featx("predict", evil, work / "cells", "-q", "--unsafe-pickle")
        assert result.exit_code == 1 and not marker.exists() and "never under the name .skops" in result.output


def test_a_joblib_model_loads_with_unsafe_pickle_and_a_warning(work, tmp_path):
    model = tmp_path / "m.joblib"
    assert featx("fit", "-f", work / "s.h5", "--cv", "2", "-o", model, "--format", "joblib").exit_code == 0
    refused = featx("predict", model, work / "cells", "-q")
    assert refused.exit_code == 1 and "--unsafe-pickle" in refused.output
    result = featx("predict", model, work / "cells", "-q", "--unsafe-pickle")
    assert result.exit_code == 0, result.output
    assert f"warning: loading {model} as a pickle (--unsafe-pickle): it runs whatever code it holds" in result.stderr
    rows = result.stdout.splitlines()
    assert len(rows) == 21 and rows[1:] == featx("predict", work / "m.skops", work / "cells", "-q").stdout.splitlines()[1:]


@pytest.mark.parametrize("drop", ["classes", "model"])
def test_a_fine_tuned_file_without_its_classes_or_model_is_damaged_in_one_line(work, tmp_path, drop):
    """predict raised KeyError with a traceback."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    finetuned = tmp_path / "ft.safetensors"
    with safe_open(Path(__file__).parent / "data" / "main-ec68bad" / "finetuned.safetensors", "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    featx_meta = {k: v for k, v in json.loads(meta["featx"]).items() if k != drop}
    save_file(tensors, finetuned, {**meta, "featx": json.dumps(featx_meta)})
    result = featx("predict", finetuned, work / "cells", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == f"Error: {finetuned} is a damaged fine-tuned network (KeyError: '{drop}')\n"
