"""#28 point 2: a perceptual hash and image statistics measured at extraction, stored per content; old stores
get them from `featx extract --rehash` (no network), and the audit of an old store says it lacks them and
changes nothing."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featx
from featx.cli import main
from featx.features._store import FeatureStore
from featx.images._quality import STATS, hamming, measure, phash

DATA = Path(__file__).parent / "data"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_quality(store: Path) -> dict[str, tuple[int, np.ndarray]]:
    with FeatureStore.open(store) as opened:
        index, hashes, stats = opened.quality()
    return {key: (int(hashes[i]), stats[i]) for key, i in index.items()}


def test_phash_is_imagehash_phash(chelsea):
    imagehash = pytest.importorskip("imagehash")
    from featx.datasets import load_elpv

    images = [chelsea, *(Image.open(f) for f in load_elpv().filenames[:20])]
    assert [phash(image.convert("L")) for image in images] == [int(str(imagehash.phash(image)), 16) for image in images]


def test_hamming_counts_differing_bits():
    a = np.array([0, 0b1011, 2**64 - 1], dtype=np.uint64)
    assert hamming(a, np.uint64(0)).tolist() == [0, 3, 64] and hamming(a[:, None], a[None]).shape == (3, 3)


@pytest.fixture
def old_main_store(tmp_path) -> Path:
    """main-ec68bad's store (made before the measures) beside its cells, writable."""
    return Path(shutil.copytree(DATA / "main-ec68bad", tmp_path / "data")) / "store.h5"


def test_rehash_measures_the_contents_of_an_old_store_without_the_network(old_main_store, monkeypatch):
    store, cells = old_main_store, old_main_store.parent / "cells"
    features = featx.load_features(store).features
    assert stored_quality(store) == {}
    plain = featx.extract(cells, store=store, progress=False, workers=0)
    assert plain.n_extracted == 0 and stored_quality(store) == {}  # only --rehash reads every file again
    from featx.features import _extraction

    monkeypatch.setattr(_extraction.Extractor, "runner", lambda self: pytest.fail("the network ran"))
    again = featx.extract(cells, store=store, progress=False, workers=0, rehash=True)
    assert again.n_extracted == 0
    np.testing.assert_array_equal(featx.load_features(store).features, features)
    measured = stored_quality(store)
    with FeatureStore.open(store) as opened:
        keys, entries = opened.keys(), opened.files()
    assert set(measured) == set(keys)
    for path, (row, _) in entries.items():
        h, stats = measure(Image.open(path))
        assert measured[keys[row]][0] == h
        np.testing.assert_allclose(measured[keys[row]][1], stats, rtol=1e-6)


def test_extraction_stores_the_measures_of_each_new_content(elpv_copy, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_copy, store=store, progress=False, workers=1)
    measured = stored_quality(store)
    loaded = featx.load_features(store)
    with FeatureStore.open(store) as opened:
        keys, entries = opened.keys(), opened.files()
    assert len(measured) == len(set(keys)) == len(loaded.paths)
    for path, (row, _) in list(entries.items())[:4]:
        h, stats = measure(Image.open(path))
        assert measured[keys[row]][0] == h and measured[keys[row]][1][STATS.index("width")] == Image.open(path).width
        np.testing.assert_allclose(measured[keys[row]][1], stats, rtol=1e-6)


@pytest.mark.parametrize("old", ["v0.1.0", "main-ec68bad"])
def test_the_audit_of_an_old_store_says_it_has_no_measures_and_changes_nothing(old, tmp_path):
    folder = tmp_path / "data"
    if old == "v0.1.0":  # the 0.1.0 store beside the very images it was made from
        from featx.datasets import write_elpv_folder

        write_elpv_folder(folder / "cells", per_class=4, seed=0)
        store = Path(shutil.copy(DATA / old / "lite0.h5", folder / "lite0.h5"))
    else:
        store = Path(shutil.copytree(DATA / old, folder)) / "store.h5"
    before = sha256(store)
    result = CliRunner().invoke(main, ["audit", str(store), "--out", str(tmp_path / "out"), "-q", "-j", "1", "--cv", "2"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "no image hashes or statistics" in line]
    assert len(notes) == 1 and "--rehash" in notes[0], result.output
    assert (tmp_path / "out" / "near_duplicates.csv").exists() and (tmp_path / "out" / "outliers.csv").exists()
    assert sha256(store) == before
