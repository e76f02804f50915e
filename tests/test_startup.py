"""Commands that run no network start without torch; an interrupt keeps rows whatever the batch size; the demo
keeps what it makes in its folder (issue #20)."""
import os
import subprocess
import sys

from conftest import interrupt_once_rows_are_committed

import featx
from featx.datasets import write_elpv_folder

HEAVY = ("torch", "torchvision", "timm")
# Python code run in a fresh interpreter that says, as it exits, which heavy modules it imported.
PROBE = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print('heavy imports:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))\n"
)
CLI = PROBE + "from featx.cli import main\nmain()"
# a model saved by featx fit, loaded (every type checked by skops) and run on its store's features
PREDICT = PROBE + (
    "import featx\nfrom featx.classify._bundle import load_bundle\n"
    "model, store = load_bundle(sys.argv[1]), featx.load_features(sys.argv[2])\n"
    "print(len(model.pipeline.predict(store.features)) == len(store.paths))"
)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, **kwargs)


def heavy_imports(result: subprocess.CompletedProcess) -> list[str]:
    line = [line for line in result.stderr.splitlines() if line.startswith("heavy imports:")][-1]
    return line.split()[2:]


def test_commands_that_run_no_network_import_neither_torch_nor_torchvision(elpv_folder, tmp_path):
    store, model = tmp_path / "s.h5", tmp_path / "m.skops"
    featx.extract(elpv_folder, "mobilenet_v3_small", weights="random", engine="torch", store=store, workers=0,
                  progress=False)
    featx.extract(elpv_folder, workers=0, progress=False)  # the default backbone, into the default store
    runs = {
        "extract (nothing new)": cli("extract", str(elpv_folder)),
        "extract --store (nothing new)": cli("extract", str(elpv_folder), "--model", "mobilenet_v3_small",
                                             "--weights", "random", "--store", str(store)),
        "fit": cli("fit", "-f", str(store), "--cv", "2", "--out", str(model)),
        "info STORE": cli("info", str(store)),
        "info MODEL": cli("info", str(model)),
        "models": cli("models"),
        "export": cli("export", str(store), "--format", "npy", "--out", str(tmp_path / "e.npy")),
        "map": cli("map", str(store), "--out", str(tmp_path / "map.html")),
        "load_bundle": subprocess.run([sys.executable, "-c", PREDICT, str(model), str(store)], capture_output=True, text=True),
    }
    for rerun in ("extract (nothing new)", "extract --store (nothing new)"):
        assert "0 extracted, 20 already in the store" in runs[rerun].stdout, runs[rerun].stderr
    assert runs["fit"].returncode == 0 and model.is_file(), runs["fit"].stderr
    assert runs["info STORE"].returncode == 0 and "files:     20" in runs["info STORE"].stdout
    assert runs["info MODEL"].returncode == 0 and "feature spaces: 1" in runs["info MODEL"].stdout, runs["info MODEL"].stderr
    assert runs["models"].returncode == 0 and "efficientnet_lite0" in runs["models"].stdout
    assert runs["export"].returncode == 0 and (tmp_path / "e.npy").is_file(), runs["export"].stderr
    assert runs["map"].returncode == 0 and (tmp_path / "map.html").is_file(), runs["map"].stderr
    assert runs["load_bundle"].stdout == "True\n", runs["load_bundle"].stderr
    assert {name: heavy_imports(run) for name, run in runs.items() if heavy_imports(run)} == {}


def test_an_interrupt_keeps_rows_whatever_the_batch_size(tmp_path):
    """--tta d4 with the default batch of 64: 512 network inputs a batch, tens of seconds on a CPU. Rows reach
    the store pass by pass, so a Ctrl-C a few seconds into the compute keeps some."""
    cells = write_elpv_folder(tmp_path / "cells", per_class=40)
    store = tmp_path / "s.h5"
    command = [sys.executable, "-c", CLI, "extract", str(cells), "--store", str(store), "--tta", "d4",
               "--image-size", "300", "--engine", "torch", "-q"]
    returncode, err, happened = interrupt_once_rows_are_committed(command, store)
    assert returncode == 130, f"{happened}\n{err}"
    kept = int(err.split("interrupted: the ")[1].split()[0])
    # fewer than one batch of 64 images: rows reached the store in passes, not batch by batch
    assert 0 < kept < 64 and len(featx.load_features(store).paths) == kept


def test_demo_keeps_what_it_makes_in_its_folder(tmp_path):
    """Run from an empty working folder with no FEATX_CACHE: the store, model and reports go to --dir, exported
    graphs to the user cache (XDG_CACHE_HOME here), nothing to the working folder."""
    work, out, user_cache = tmp_path / "work", tmp_path / "out", tmp_path / "xdg"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FEATX_CACHE"} | {"XDG_CACHE_HOME": str(user_cache)}
    result = cli("demo", "--dir", str(out), "--per-class", "10", "-q", cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []
    made = {p.name for p in out.iterdir()}
    assert {"elpv", "features.h5", "featx-svm.skops", "featx-svm.skops.html", "featx-svm.skops.json", "test.csv"} <= made
    assert len(featx.load_features(out / "features.h5").paths) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work", "xdg"]


def test_the_registry_states_what_torchvision_and_timm_say():
    """`featx models` lists input sizes and weights files from the registry: they agree with the libraries'."""
    from featx.backbones._registry import REGISTRY
    from featx.backbones._weights import TorchvisionWeights

    for name, backbone in REGISTRY.items():
        assert backbone.input_size == backbone.preprocessing().crop, name
        assert backbone.preprocessing() == library_preprocessing(name), name
        listed = backbone.default_weights()
        if backbone.family == "torchvision":
            library = TorchvisionWeights(listed.weights)
            assert (listed.expected_file(), listed.download_mb(), listed.id) == (
                library.expected_file(), library.download_mb(), library.id), name


def library_preprocessing(name: str):
    """What torchvision's DEFAULT weights' transforms, or timm's pretrained config, say of `name`'s inputs."""
    from torchvision.models import get_model_weights

    from featx.backbones._preprocessing import Preprocessing, interpolation_name
    from featx.backbones._registry import _timm_preprocessing

    if name.startswith("efficientnet_lite"):
        return _timm_preprocessing("tf_" + name)
    tf = get_model_weights(name).DEFAULT.transforms()
    return Preprocessing(tf.resize_size[0], tf.crop_size[0], interpolation_name(tf.interpolation), tuple(tf.mean),
                         tuple(tf.std))


def test_the_torch_hub_folder_is_found_without_torch(tmp_path):
    """The folder torch hub caches downloads in, under each of its environment variables, with and without torch."""
    settings = [{"TORCH_HOME": str(tmp_path / "t")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {"HOME": str(tmp_path)}]
    loop = ("import os\nbase = {k: v for k, v in os.environ.items() if k not in ('TORCH_HOME', 'XDG_CACHE_HOME')}\n"
            f"for setting in {settings!r}:\n"
            "    os.environ.clear()\n    os.environ.update(base, **setting)\n    print(CALL)\n")
    ours = subprocess.run([sys.executable, "-c", PROBE + "from featx.backbones._weights import torch_hub_dir\n" +
                           loop.replace("CALL", "torch_hub_dir()")], capture_output=True, text=True, check=True)
    theirs = subprocess.run([sys.executable, "-c", "import torch.hub\n" + loop.replace("CALL", "torch.hub.get_dir()")],
                            capture_output=True, text=True, check=True)
    assert ours.stdout == theirs.stdout and len(set(ours.stdout.split())) == 3 and heavy_imports(ours) == []
