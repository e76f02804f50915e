"""featx finetune on real ELPV cells, small: the loss falls, the file is right, its features and head work,
and a run killed with -9 then resumed ends exactly where an uninterrupted run does."""
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import torch
from click.testing import CliRunner
from featx.cli import main
from safetensors.torch import load_file

import featx
from featx.features._store import load_features
from featx.finetuning._apply import is_finetuned, load_finetuned
from featx.finetuning._loop import checkpoint_path

SETTINGS = dict(image_size=48, freeze_epochs=1, epochs=2, batch_size=8, val_size=0.25, seed=3)
SCRIPT = """
import sys, featx
featx.finetune(sys.argv[1], out=sys.argv[2], workers=0, progress=False, **{settings})
"""


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from featx.datasets import write_elpv_folder

    return write_elpv_folder(tmp_path_factory.mktemp("finetune") / "cells", per_class=8)


@pytest.fixture(scope="module")
def trained(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "cells.safetensors"
    return featx.finetune(cells, out=out, workers=0, progress=False, **SETTINGS)


def test_finetune_learns_and_writes_a_safetensors_file(trained, cells):
    history = trained.history
    assert [row["phase"] for row in history] == ["head", "all", "all"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert is_finetuned(trained.path) and not checkpoint_path(trained.path).exists()
    with open(trained.path, "rb") as f:
        assert b"pickle" not in f.read(64)
    meta = load_finetuned(trained.path).metadata
    assert meta["classes"] == trained.classes == sorted(p.name for p in cells.iterdir())
    assert meta["model"] == "efficientnet_lite0" and meta["image_size"] == 48
    assert meta["preprocessing"]["crop"] == 48 and meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["config"]["epochs"] == 2 and meta["n_train"] + meta["n_val"] == 32 and meta["n_val"] == 8
    assert [row["val_accuracy"] for row in meta["history"]] == [row["val_accuracy"] for row in history]
    assert meta["best_epoch"] == trained.best_epoch and meta["data_hash"].startswith("sha256:")
    state = load_file(trained.path)
    assert state["classifier.weight"].shape == (4, 1280)
    assert trained.failures == []


def test_extract_fit_predict_with_the_finetuned_network(trained, cells, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    # all layers trained, last epoch kept (the fixture's run may keep its head-only epoch: an unchanged body)
    body = featx.finetune(cells, out=tmp_path / "body.safetensors", image_size=32, freeze_epochs=0, epochs=1,
                          batch_size=8, val_size=0, workers=0, progress=False)
    for weights, store in ((None, "base.h5"), (str(body.path), "tuned.h5")):
        args = ["extract", str(cells), "--image-size", "32", "-q", "-w", "0", "-o", str(tmp_path / store)]
        result = runner.invoke(main, args + (["--weights", weights] if weights else []))
        assert result.exit_code == 0, result.output
    base, tuned = load_features(tmp_path / "base.h5"), load_features(tmp_path / "tuned.h5")
    with featx.FeatureStore.open(tmp_path / "base.h5") as a, featx.FeatureStore.open(tmp_path / "tuned.h5") as b:
        assert a.space.weights != b.space.weights and b.space.weights.startswith("file:sha256:")
    assert list(base.paths) == list(tuned.paths) and tuned.features.shape == base.features.shape
    assert np.abs(tuned.features - base.features).mean() > 1e-3
    result = runner.invoke(main, ["fit", "-f", str(tmp_path / "tuned.h5"), "--clf", "svm", "--cv", "2",
                                  "-o", str(tmp_path / "svm.skops")])
    assert result.exit_code == 0, result.output
    transformer = featx.PretrainedFeatures(weights=body.path, image_size=32, cache=False, engine="torch")
    np.testing.assert_allclose(transformer.fit_transform(list(tuned.paths[:3])), tuned.features[:3], rtol=1e-3, atol=1e-4)
    # the model finds the weights file its store recorded: new images predict with no extra option (#26)
    new = tmp_path / "new"
    new.mkdir()
    for cell in sorted((cells / "defective").iterdir())[:3]:
        Image.open(cell).save(new / cell.name, compress_level=1)  # new bytes: not in the training store
    predict = ["predict", str(tmp_path / "svm.skops"), str(new), "-q", "-w", "0"]
    found = runner.invoke(main, predict)
    named = runner.invoke(main, [*predict, "--weights", str(body.path)])
    assert found.exit_code == 0 and "3 extracted" in found.stderr, found.output
    assert found.stdout == named.stdout and len(found.stdout.splitlines()) == 4
    body.path.rename(tmp_path / "moved.safetensors")
    gone = runner.invoke(main, predict)
    assert gone.exit_code == 1 and "Traceback" not in gone.output
    assert f"weights file {body.path}, which is gone: pass" in gone.stderr and len(gone.stderr.splitlines()) == 1

    predicted = runner.invoke(main, ["predict", str(trained.path), str(cells / "defective"), "-q", "--workers", "0"])
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.stdout.strip().splitlines()
    assert lines[0].split(",")[2:] == [f"probability:{c}" for c in trained.classes] + ["error"] and len(lines) == 9
    assert all(np.isclose(sum(map(float, line.split(",")[2:-1])), 1, atol=1e-4) for line in lines[1:])
    evaluated = runner.invoke(main, ["evaluate", str(trained.path), str(cells), "-q", "--workers", "0", "--tta", "d4",
                                     "--report", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "n=32" in evaluated.stdout and "head:" in evaluated.stdout


def test_evaluate_where_no_labelled_file_decodes_is_one_line(trained, tmp_path):
    """As for a fitted model: it was scikit-learn's "Found empty input array" traceback."""
    for name in trained.classes[:2]:
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = CliRunner().invoke(main, ["evaluate", str(trained.path), str(tmp_path / "data"), "-q", "-w", "0"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and "Traceback" not in result.output and len(errors) == 1, result.output
    assert "none of the 2 labelled images could be read (" in errors[0] and "cut.png" in errors[0]


def test_kill_9_during_epoch_3_then_resume_equals_an_uninterrupted_run(trained, cells, tmp_path):
    out = tmp_path / "killed.safetensors"
    ckpt = checkpoint_path(out)
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(settings=SETTINGS), str(cells), str(out)])
    deadline, written = time.monotonic() + 600, set()  # epochs took over 60 s each on shared, loaded cores
    while time.monotonic() < deadline and process.poll() is None and len(written) < 2:
        if ckpt.exists():  # each epoch's checkpoint is a new file renamed over the last: a new inode
            written.add(ckpt.stat().st_ino)
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed during its last epoch"
    process.kill()
    process.wait()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert not out.exists()
    resumed = featx.finetune(cells, out=out, workers=0, progress=False, resume=True, **SETTINGS)
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in trained.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in trained.history]
    expected, got = load_file(trained.path), load_file(out)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ from the uninterrupted run's"


def test_bad_files_are_skipped_and_reported(cells, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cells, data)
    (data / "functional" / "empty.png").write_bytes(b"")
    (data / "defective" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines = []
    result = featx.finetune(data, out=tmp_path / "m.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                            batch_size=16, val_size=0, workers=0, progress=False, log=lines.append)
    reasons = dict(result.failures)
    assert set(reasons) == {str(data / "functional" / "empty.png"), str(data / "defective" / "broken.png")}
    assert reasons[str(data / "functional" / "empty.png")] == "empty file (0 bytes)"
    assert any(line.startswith("skipped: ") and "broken.png" in line for line in lines)
    assert load_finetuned(result.path).metadata["n_train"] == 32


@pytest.mark.parametrize("args, message, status", [
    (["--model", "no_such_net"], "unknown model 'no_such_net'", 2),  # a usage error
    ([], "finetune needs at least 2 classes", 1),
    (["--seed", "-1"], "'--seed'", 2),  # scikit-learn's splits take 0 to 2**32 - 1: a traceback once every image was read
])
def test_one_line_errors(cells, tmp_path, args, message, status):
    shutil.copytree(cells / "defective", tmp_path / "one" / "defective")
    result = CliRunner().invoke(main, ["finetune", str(tmp_path / "one"), "-o", str(tmp_path / "m.safetensors"), *args])
    assert result.exit_code == status
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]  # usage errors add a usage line
    assert len(errors) == 1 and message in errors[0], result.output


@pytest.mark.parametrize("out, input_named", [("list.csv", "list.csv"), ("listed", "listed.ckpt"),
                                               ("m.csv", "m.fold2-of-2.csv"), ("m.csv", "m.fold1-of-2.csv.ckpt")])
def test_out_its_checkpoint_and_its_fold_networks_may_not_be_an_input(cells, tmp_path, out, input_named):
    """`featx finetune list.csv -o list.csv` trained and wrote the network over its own listing; OUT.ckpt, written
    after every epoch, the fold networks (`--folds 2`) and their checkpoints are checked the same way."""
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{p},{p.parent.name}\n" for p in sorted(cells.rglob("*.png"))))
    data = tmp_path / input_named
    if input_named != "list.csv":
        shutil.copy(listing, data)
    before = listing.read_bytes()
    result = CliRunner().invoke(main, ["finetune", str(data), "-o", str(tmp_path / out), "--image-size", "32", "--folds", "2",
                                       "--freeze-epochs", "1", "--epochs", "0", "--val-size", "0", "-w", "0", "-q"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and f"it is the input {data}" in errors[0], result.output
    assert listing.read_bytes() == before and data.read_bytes() == before


def test_a_validation_part_that_leaves_too_few_to_train_on_is_one_line(cells, tmp_path):
    """Once every image was read, scikit-learn's split raised its own ValueError: a traceback."""
    result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(tmp_path / "m.safetensors"), "--val-size", "0.97",
                                       "--image-size", "32", "-w", "0", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "val_size 0.97 leaves" in errors[0] and "lower val_size" in errors[0], result.output


def test_copies_of_an_image_fall_on_one_side_of_the_validation_split(cells, tmp_path):
    """The split was over files: a copy could be validated on while its twin was trained on. Over distinct contents
    now; without copies the files in validation are those the file split chose, so earlier runs resume the same."""
    from sklearn.model_selection import train_test_split

    from featx.backbones._preprocessing import Preprocessing
    from featx.finetuning._data import load_training_images
    from featx.images._inputs import find_images

    def pool(folder):
        pre = Preprocessing(32, 32, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return load_training_images(find_images(folder), pre, 0, False, lambda line: None)[0]

    plain = pool(cells)
    for seed in range(5):
        plain.split(0.25, seed)
        _, before = train_test_split(np.arange(32), test_size=8, stratify=plain.labels, random_state=seed)
        assert list(plain.val) == sorted(before) and len(plain.train) == 24
    data = tmp_path / "copies"
    shutil.copytree(cells, data)
    for folder in data.iterdir():
        for i, image in enumerate(sorted(folder.iterdir())[:4]):
            shutil.copy(image, folder / f"copy{i}.png")
    copies = pool(data)
    for seed in range(5):
        copies.split(0.25, seed)
        validated, trained_on = ({copies.keys[i] for i in part} for part in (copies.val, copies.train))
        assert not validated & trained_on and len(validated) == 8 and len(validated | trained_on) == 32
        assert np.bincount(copies.labels[copies.val]).min() >= 2


def test_d4_augmentation_gives_each_image_one_of_its_8_symmetries():
    from featx.features._network import d4_views
    from featx.finetuning._data import augment

    x = torch.arange(64 * 3 * 5 * 5, dtype=torch.float32).view(64, 3, 5, 5)
    out = augment(x, "d4", 0.0, torch.Generator().manual_seed(0))
    views = d4_views(x).unflatten(0, (8, -1))  # 8 x 64 x 3 x 5 x 5
    chosen = [next(k for k in range(8) if torch.equal(out[i], views[k, i])) for i in range(64)]
    assert len(set(chosen)) == 8  # every symmetry drawn, the identity among them


def test_images_streamed_from_disk_when_they_do_not_fit_train_the_same(trained, cells, tmp_path, monkeypatch):
    monkeypatch.setattr("featx.finetuning._data.MEMORY_FRACTION", 0.0)  # nothing fits: every batch decoded again
    streamed = featx.finetune(cells, out=tmp_path / "streamed.safetensors", workers=0, progress=False, **SETTINGS)
    assert [r["train_loss"] for r in streamed.history] == [r["train_loss"] for r in trained.history]
    expected, got = load_file(trained.path), load_file(streamed.path)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_by_default_the_stride_4_stages_keep_their_pretrained_weights_and_statistics(cells, tmp_path):
    """freeze_until=auto (the default): Lite0's stem, blocks.0 and blocks.1 (outputs at 1/2 and 1/4 of the input)
    stay pretrained, BatchNorm statistics included; blocks.2 on learns. `none` trains them all."""
    from featx.backbones._registry import get_backbone

    settings = dict(image_size=32, freeze_epochs=0, epochs=1, batch_size=8, val_size=0, workers=0, progress=False)
    result = featx.finetune(cells, out=tmp_path / "m.safetensors", **settings)
    everything = featx.finetune(cells, out=tmp_path / "all.safetensors", freeze_until="none", **settings)
    backbone = get_backbone("efficientnet_lite0")
    base, tuned = backbone.build_model(backbone.weights(None)).state_dict(), load_file(result.path)
    early = [k for k in base if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))]
    later = [k for k in base if k.startswith("blocks.2.") and "running_" in k or k.endswith("conv_head.weight")]
    assert any("running_mean" in k for k in early) and later
    assert all(torch.equal(base[k], tuned[k]) for k in early)
    assert not any(torch.equal(base[k], tuned[k]) for k in later)
    assert load_finetuned(result.path).metadata["frozen_until"] == "blocks.1"
    trained_all = load_file(everything.path)
    assert not any(torch.equal(base[k], trained_all[k]) for k in early if k.endswith("running_mean"))
    assert load_finetuned(everything.path).metadata["frozen_until"] is None


@pytest.mark.parametrize(("model", "layer"), [("resnet18", "layer1"), ("vgg16", "features.15"),
                                              ("mobilenet_v3_small", "features.1"), ("timm/vit_tiny_patch16_224", None)])
def test_auto_freezing_finds_each_networks_last_stage_at_a_quarter_of_the_resolution(model, layer):
    """Found from one forward pass (random weights here): the same rule names each family's own stage, and a
    vision transformer, without such feature maps, trains every layer."""
    from featx.backbones._registry import get_backbone
    from featx.finetuning._model import _frozen_until

    network = get_backbone(model).build()
    assert _frozen_until(network, "auto", 224, torch.device("cpu")) == layer
    assert _frozen_until(network, "none", 224, torch.device("cpu")) is None


def test_ordinal_targets_make_a_near_miss_cost_less_than_a_far_one():
    from featx.finetuning._config import FinetuneConfig
    from featx.finetuning._model import Loss

    classes = ["bad", "fair", "good", "poor"]  # sorted names; the grades are good < fair < poor < bad
    grades = "good,fair,poor,bad"
    loss = Loss.of(FinetuneConfig(ordinal=grades), np.array([0, 1, 2, 3]), classes)
    assert torch.allclose(loss.targets.sum(1), torch.ones(4))
    assert loss.targets[2].argmax() == 2 and loss.targets[2, 1] > loss.targets[2, 3] > loss.targets[2, 0]
    y = torch.tensor([2])  # truly "good"
    confident = {c: torch.full((1, 4), -4.0).index_fill(1, torch.tensor([c]), 4.0) for c in range(4)}
    near, far = loss(confident[1], y), loss(confident[0], y)  # "fair" (one grade off) vs "bad" (three)
    assert near < far
    plain = Loss.of(FinetuneConfig(), np.array([0, 1, 2, 3]), classes)
    assert torch.isclose(plain(confident[1], y), plain(confident[0], y))


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_a_damaged_checkpoint_is_one_line_on_resume(cells, tmp_path, content):
    """Issue #25 (8d): a tampered checkpoint (a pickle that is not tensors, or bytes that are no zip) ends in
    one line naming it, never an UnpicklingError traceback, and runs no code."""
    import os
    import pickle

    out, marker = tmp_path / "m.safetensors", tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    checkpoint_path(out).write_bytes(content if content is not None else pickle.dumps(Payload()))
    result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(out), "--resume", "--epochs", "1",
                                       "--image-size", "32", "-w", "0"])
    assert result.exit_code == 1 and not marker.exists() and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"{checkpoint_path(out)} is not a readable checkpoint" in errors[0], result.output


def test_ctrl_c_keeps_the_checkpoint_and_prints_the_resume_command(cells, tmp_path, monkeypatch):
    """#25 point 9: Ctrl-C printed "Aborted!" and exited 1 with no resume hint."""
    from featx.finetuning._loop import Trainer

    out = tmp_path / "m.safetensors"
    run_epoch, epochs = Trainer.run_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted_in_epoch_2)
    monkeypatch.setattr(sys, "argv", ["featx", "finetune", str(cells), "-o", str(out), "--epochs", "1",
                                      "--image-size", "32", "-q"])
    result = CliRunner().invoke(main, sys.argv[1:])
    assert result.exit_code == 130, result.output
    assert result.output.splitlines() == [f"interrupted: the finished epochs are kept in {checkpoint_path(out)}",
                                          f"resume with: featx finetune {cells} -o {out} --epochs 1 --image-size 32 -q --resume"]
    checkpoint = torch.load(checkpoint_path(out), weights_only=True)
    assert checkpoint["epoch"] == 1 and not out.exists()
    # the keys featx wrote before TrainState (#26): a checkpoint of either resumes with the other
    assert set(checkpoint) == {"epoch", "history", "best", "best_epoch", "best_key", "optimizer", "model",
                               "optimizer_frozen", "fingerprint"}


def test_a_run_without_resume_says_it_replaces_the_checkpoint_of_the_same_run(cells, tmp_path, monkeypatch):
    """It replaced OUT.ckpt silently: a forgotten --resume lost the finished epochs without a word."""
    from featx.finetuning._loop import Trainer

    class Stop(Exception):
        pass

    out, run_epoch, epochs, lines = tmp_path / "m.safetensors", Trainer.run_epoch, [], []

    def stopped_in_epoch(n):
        def run(*args, **kwargs):
            epochs.append(1)
            if len(epochs) == n:
                raise Stop
            return run_epoch(*args, **kwargs)
        return run

    settings = dict(image_size=32, freeze_epochs=1, epochs=1, batch_size=8, val_size=0, workers=0, progress=False)
    for stop_in in (2, 3):  # a run stopped during its second epoch; the same run again, stopped before its first
        monkeypatch.setattr(Trainer, "run_epoch", stopped_in_epoch(stop_in))
        with pytest.raises(Stop):
            featx.finetune(cells, out=out, log=lines.append, **settings)
    assert f"{checkpoint_path(out)} holds this run's checkpoint after epoch 1 of 2, which --resume would continue: " \
           "this run starts over and replaces it" in lines
    assert sum("checkpoint" in line for line in lines) == 1


def test_fine_tuned_features_leave_no_onnx_graph_behind(trained, cells, tmp_path, monkeypatch, private_cache):
    """#25 point 9: every fine-tuned network left its exported graph (13.5 MB for Lite0) in the shared user cache,
    which nothing removes; theirs is now exported for the run only."""
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    report = featx.extract(cells, weights=trained.path, image_size=48, store=tmp_path / "t.h5", engine="onnx",
                           workers=0, progress=False)
    assert report.n_extracted == 32
    assert not list(private_cache.rglob("*.onnx")) and not list((tmp_path / "tmp").iterdir())


def test_folds_train_a_network_without_each_fold_and_keep_the_one_trained_before(trained, cells, tmp_path):
    """`--folds 2`: the network fine-tuned before with the same data and settings is kept, not trained again; two
    more, each without one stratified fold (for featx compare's cross-fitted CV); `--folds 1` is one line."""
    from featx.backbones._weights import fold_path

    out = tmp_path / "cells.safetensors"
    shutil.copy(trained.path, out)
    stamp = out.stat().st_mtime_ns
    options = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(out), "--folds", "2", "--workers", "0", "-q",
                                       *options])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mtime_ns == stamp
    seen = []
    for k in (1, 2):
        meta = load_finetuned(fold_path(out, k, 2)).metadata
        assert meta["fold"] == [k, 2] and meta["n_train"] + meta["n_val"] == 16 and meta["config"]["epochs"] == 2
        seen.append(set(meta["trained_on"]))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 32  # each image left out by one fold network
    result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(out), "--folds", "2", "--workers", "0", "-q",
                                       *options, "--label-smoothing", "0.05"])  # another setting: trained again
    assert result.exit_code == 0 and out.stat().st_mtime_ns != stamp
    assert load_finetuned(fold_path(out, 1, 2)).metadata["config"]["label_smoothing"] == 0.05
    for folds, message, status in (("1", "folds must be 0 (none) or an integer of at least 2", 2),
                                   ("9", "class 'defective' has 8 distinct readable image(s): fewer than the 9 folds", 1)):
        fresh = tmp_path / f"folds{folds}.safetensors"  # refused before any training
        result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(fresh), "--folds", folds])
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == status and len(errors) == 1 and message in errors[0], result.output
        assert not fresh.exists()


def test_a_fold_too_small_for_its_validation_split_is_refused_before_any_training(cells, tmp_path):
    """3 images a class, 2 folds: one fold network would keep 1 of a class, which its validation split cannot
    divide; that failed after OUT had trained, now it is one line first."""
    for folder in sorted(p for p in cells.iterdir() if p.is_dir())[:2]:
        (tmp_path / "small" / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:3]:
            shutil.copy(image, tmp_path / "small" / folder.name)
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(main, ["finetune", str(tmp_path / "small"), "-o", str(out), "--folds", "2", "-q"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "without fold" in errors[0], result.output
    assert "needs at least 2 per class" in errors[0] and not out.exists()


def test_patience_counts_all_layer_epochs_only(cells, tmp_path, monkeypatch):
    """The best epoch a head-only one (here the first): the run stops after `patience` all-layer epochs without a
    better one, not after patience epochs counted from the warm-up (which stopped it after one all-layer epoch).
    The file holds that best epoch's weights, not the last epoch's (each epoch's are taken from its checkpoint)."""
    from featx.finetuning._loop import Trainer, TrainState

    accuracies = iter([0.9] + [0.5] * 20)
    monkeypatch.setattr(Trainer, "validate", lambda self: (1.0, next(accuracies)))
    after, save = {}, TrainState.save

    def spy(state, path):  # the model after each epoch, as its checkpoint holds it
        after[state.epoch] = state.model
        save(state, path)

    monkeypatch.setattr(TrainState, "save", spy)
    result = featx.finetune(cells, out=tmp_path / "m.safetensors", image_size=32, freeze_epochs=3, epochs=6, patience=2,
                            batch_size=8, val_size=0.25, workers=0, progress=False)
    assert [row["phase"] for row in result.history] == ["head"] * 3 + ["all"] * 2 and result.best_epoch == 1
    saved = load_file(result.path)
    assert sorted(after) == [1, 2, 3, 4, 5] and saved.keys() == after[1].keys()
    assert [k for k in saved if not torch.equal(saved[k], after[1][k])] == []
    assert [k for k in saved if not torch.equal(saved[k], after[5][k])]  # the last epoch's differ


def test_every_training_batch_is_augmented_as_configured(cells, tmp_path, monkeypatch):
    """Each training step's batch goes through `augment` with the configured kind and jitter before the network
    sees it, in both phases; validation images never do (the run's own augment and jitter, not the defaults)."""
    import math

    from featx.finetuning import _loop

    seen, augment = [], _loop.augment

    def spy(x, how, jitter, generator):
        seen.append((len(x), how, jitter))
        return augment(x, how, jitter, generator)

    monkeypatch.setattr(_loop, "augment", spy)
    result = featx.finetune(cells, out=tmp_path / "m.safetensors", image_size=32, freeze_epochs=1, epochs=1,
                            batch_size=8, val_size=0.25, augment="flip", jitter=0.2, workers=0, progress=False)
    n_train = load_finetuned(result.path).metadata["n_train"]
    per_epoch = n_train - (n_train % 8 == 1)  # a last batch of one image is left out
    assert {(how, jitter) for _, how, jitter in seen} == {("flip", 0.2)}
    assert len(seen) == 2 * math.ceil(per_epoch / 8) and sum(size for size, _, _ in seen) == 2 * per_epoch


def test_freeze_until_none_in_any_case_trains_every_layer(cells, tmp_path):
    result = CliRunner().invoke(main, ["finetune", str(cells), "-o", str(tmp_path / "m.safetensors"), "--freeze-until",
                                       "None", "--image-size", "32", "--freeze-epochs", "0", "--epochs", "1", "-w", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert load_finetuned(tmp_path / "m.safetensors").metadata["frozen_until"] is None


def test_a_run_that_diverges_keeps_the_epoch_before_it_and_one_that_diverges_at_once_writes_nothing(cells, tmp_path):
    """A NaN validation loss still gave an argmax "accuracy", which could beat the earlier epochs': a network of
    NaN was kept and written without a word."""
    lines = []
    diverging = dict(image_size=32, epochs=1, freeze_epochs=1, batch_size=8, val_size=0.25, seed=1, workers=0,
                     progress=False, log=lines.append)
    result = featx.finetune(cells, out=tmp_path / "d.safetensors", lr=1e-3, body_lr=1e30, **diverging)
    assert result.best_epoch == 1 and lines[-1].startswith("training diverged (loss ") and lines[-1].endswith(
        "lower --lr and --body-lr): stopping; keeping epoch 1"), lines
    assert all(torch.isfinite(tensor).all() for tensor in load_file(result.path).values())
    with pytest.raises(featx.FeatxError, match=r"^training diverged in epoch 1 \(loss nan.*\): nothing to keep; lower"):
        featx.finetune(cells, out=tmp_path / "e.safetensors", lr=1e30, body_lr=1e30, **diverging)
    assert not (tmp_path / "e.safetensors").exists()
