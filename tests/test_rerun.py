"""Reruns: the stat index spares unchanged files a read; changed ones are read again; old stores still work."""
import os
import shutil
import time

import h5py
import pytest
from click.testing import CliRunner
from conftest import assert_same_features

import featx
from featx.errors import FeatureSpaceMismatchError
from featx.features import _extraction as extraction
from featx.features._extraction import RACY_NS
from featx.features._store import FeatureStore
from featx.images import _content as content
from featx.images._inputs import display_path

FAST = dict(model="mobilenet_v3_small", weights="random", workers=0, progress=False)


@pytest.fixture
def aged_cells(elpv_copy):
    """A private copy of 20 ELPV cells, last changed more than the racy window ago (a fresh file gets no
    stat entry: it could change again within the same timestamp tick)."""
    time.sleep(RACY_NS / 1e9 + 0.1)
    return elpv_copy


@pytest.fixture
def opened(monkeypatch):
    """The files featx opens to hash them (no decode worker: FAST decodes in this process, through
    `read_bytes`, which is wrapped as well)."""
    seen = []

    def recording_open(path, *args, **kwargs):
        seen.append(display_path(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(content, "open", recording_open, raising=False)
    return seen


def files_under(paths, folder):
    folder = display_path(folder)
    return sorted(p for p in paths if p.startswith(folder))


def stat_count(store) -> int:
    with FeatureStore.open(store) as opened:
        return opened.count("stat")


def test_a_rerun_of_unchanged_files_opens_none_and_rehash_opens_each_once(aged_cells, tmp_path, opened):
    store = tmp_path / "s.h5"
    first = featx.extract(aged_cells, store=store, **FAST)
    assert first.n_extracted == 20 and len(files_under(opened, aged_cells)) == 40  # hashed, then decoded
    assert stat_count(store) == 20
    opened.clear()
    again = featx.extract(aged_cells, store=store, **FAST)
    assert files_under(opened, aged_cells) == []
    assert (again.n_files, again.n_cached, again.n_extracted, again.n_failed) == (20, 20, 0, 0)
    rehashed = featx.extract(aged_cells, store=store, rehash=True, **FAST)
    paths = files_under(opened, aged_cells)
    assert len(paths) == len(set(paths)) == 20 and rehashed.n_extracted == 0
    assert stat_count(store) == 20  # entries that did not change are not written again


def test_files_changed_within_the_racy_window_get_no_stat_entry(elpv_copy, tmp_path, opened, monkeypatch):
    monkeypatch.setattr(extraction, "RACY_NS", 3600 * 10**9)  # the copy was made well within the last hour
    store = tmp_path / "s.h5"
    featx.extract(elpv_copy, store=store, **FAST)
    assert stat_count(store) == 0
    opened.clear()
    assert featx.extract(elpv_copy, store=store, **FAST).n_extracted == 0
    assert len(files_under(opened, elpv_copy)) == 20  # hashed again, when in doubt


def same_size_content(source, size: int) -> bytes:
    """Another real image's PNG bytes, padded to `size` (Pillow stops reading a PNG at its end chunk)."""
    data = source.read_bytes()
    assert len(data) < size
    return data + b"\0" * (size - len(data))


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_a_rewrite_with_the_same_size_and_mtime_is_caught(aged_cells, tmp_path, how):
    store = tmp_path / "s.h5"
    featx.extract(aged_cells, store=store, **FAST)
    paths = sorted(aged_cells.rglob("*.png"), key=lambda p: p.stat().st_size)
    small, target = paths[0], paths[-1]
    before = target.stat()
    new = same_size_content(small, before.st_size)
    if how == "in place":
        with open(target, "r+b") as f:
            f.write(new)
    else:
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(new)
        os.replace(temporary, target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (after.st_ino != before.st_ino) == (how == "replaced") and after.st_ctime_ns != before.st_ctime_ns
    report = featx.extract(aged_cells, store=store, **FAST)
    assert report.n_extracted == 1
    with FeatureStore.open(store) as opened:
        features, found = opened.features_for([str(target), str(small)])
    assert found.all()
    assert_same_features(features[0], features[1])  # the new bytes' features


def test_rehash_on_the_command_line(aged_cells, tmp_path, opened):
    from featx.cli.extract import extract

    store = tmp_path / "s.h5"
    args = [str(aged_cells), "--model", "mobilenet_v3_small", "--weights", "random", "-w", "0", "-q", "-o", str(store)]
    assert CliRunner().invoke(extract, args).exit_code == 0
    opened.clear()
    assert CliRunner().invoke(extract, args).exit_code == 0
    assert files_under(opened, aged_cells) == []
    result = CliRunner().invoke(extract, [*args, "--rehash"])
    assert result.exit_code == 0 and "0 extracted, 20 already in the store" in result.output
    assert len(files_under(opened, aged_cells)) == 20


def make_010_store(folder, store):
    """A store as featx 0.1.0 wrote it: full decoding (no decode entry in its feature space), no stat index."""
    featx.extract(folder, store=store, decode="full", **FAST)
    with FeatureStore.open(store) as opened:
        texts = {name: opened._column(name) for name in ("files/path", "classes", "failed/path", "failed/reason")}
    with h5py.File(store, "a") as h5:
        del h5["stat"]
        del h5.attrs["stat"]
        for name, values in texts.items():  # 0.1.0's variable-length strings
            del h5[name + ".bytes"], h5[name + ".ends"]
            h5.create_dataset(name, data=values, maxshape=(None,), dtype=h5py.string_dtype(), chunks=(4096,))
        h5.attrs["format"] = "featx-store/1"
    with FeatureStore.open(store) as opened:
        return opened.space.as_dict()


def test_a_featx_010_store_keeps_its_feature_space_and_is_extended_in_its_own_decode_mode(elpv_copy, tmp_path):
    store = tmp_path / "old.h5"
    space = make_010_store(elpv_copy / "functional", store)
    assert "decode" not in space and set(space["preprocessing"]) == {"resize", "crop", "interpolation", "mean", "std"}
    with FeatureStore.open(store) as opened:
        assert opened.stat_index() == {} and len(opened.files()) == 5
    report = featx.extract(elpv_copy, store=store, **FAST)  # no decode mode named: the store's own
    assert (report.n_cached, report.n_extracted) == (5, 15)
    with FeatureStore.open(store) as opened:
        assert opened.space.as_dict() == space and len(opened.files()) == 20
    with pytest.raises(FeatureSpaceMismatchError, match="decode: store has None, run asks 'reduced'"):
        featx.extract(elpv_copy, store=store, decode="reduced", **FAST)
    new = featx.extract(elpv_copy, store=tmp_path / "new.h5", **FAST)
    with FeatureStore.open(new.store) as opened:
        assert opened.space.as_dict() == {**space, "decode": "reduced"}


def test_the_default_store_of_featx_010_is_the_one_extended(elpv_copy, tmp_path):
    old = featx.extract(elpv_copy, decode="full", **FAST).store
    assert featx.extract(elpv_copy, **FAST).store == old
    shutil.move(old, tmp_path / "elsewhere.h5")
    new = featx.extract(elpv_copy, **FAST).store
    assert new != old and new.parent == old.parent
