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
from featx.auditing._findings import IMAGE_FINDINGS
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


@pytest.fixture(scope="module")
def planted_images(tmp_path_factory):
    """(folder, audit): 16 ELPV mono cells (one of them with its neighbour in the module, the next cell number),
    a JPEG q85 copy and a 2% crop of that cell; a dark, a Gaussian-blurred and a blank version of another cell;
    unlabelled (no label check)."""
    from PIL import ImageEnhance, ImageFilter

    from featx.auditing._audit import audit
    from featx.datasets import load_elpv

    root = tmp_path_factory.mktemp("planted") / "images"
    root.mkdir()
    elpv = load_elpv()
    names = [Path(f).name for f in elpv.filenames]
    mono = np.flatnonzero((elpv.cell_type == "mono") & (elpv.target == 0))
    def q85_keeps_its_hash(i: int) -> bool:  # 80% of ELPV cells do (docs/audit.md); crops mostly do not
        import io

        encoded = io.BytesIO()
        Image.open(elpv.filenames[i]).save(encoded, "JPEG", quality=85)
        return phash(Image.open(encoded).convert("L")) == phash(Image.open(elpv.filenames[i]).convert("L"))

    source = next(i for i in mono if f"cell{int(names[i][4:8]) + 1:04d}.png" in names and q85_keeps_its_hash(i))
    neighbour = names.index(f"cell{int(names[source][4:8]) + 1:04d}.png")
    chosen = [source, neighbour, *np.random.default_rng(1).choice(np.setdiff1d(mono, [source, neighbour]), 14, replace=False)]
    for i in chosen:
        shutil.copyfile(elpv.filenames[i], root / names[i])
    cell = Image.open(elpv.filenames[source])
    cell.save(root / "copy-q85.jpg", quality=85)
    w, h = cell.size
    cell.crop((round(0.01 * w), round(0.01 * h), w - round(0.01 * w), h - round(0.01 * h))).save(root / "copy-crop2.png")
    other = Image.open(elpv.filenames[chosen[2]])
    ImageEnhance.Brightness(other).enhance(0.15).save(root / "planted-dark.png")
    other.filter(ImageFilter.GaussianBlur(4)).save(root / "planted-blurred.png")
    Image.new("L", other.size, 128).save(root / "planted-blank.png")
    store = root.parent / "store.h5"
    featx.extract(root, store=store, progress=False, workers=1)
    return root, names[source], names[neighbour], names[chosen[2]], audit(store, n_jobs=1, progress=False)


def test_copies_of_a_cell_are_found_by_the_hash_and_its_neighbour_is_not(planted_images):
    """#28 point 3: a JPEG q85 copy of a cell joins its source's cluster through the hash; the neighbouring
    cell of the module (a distinct cell) does not. The 2% crop is not asserted: on ELPV its hash differs by
    2-10 bits, as much as distinct neighbouring cells' (docs/audit.md)."""
    root, source, neighbour, _, result = planted_images
    near = {Path(r[1]).name: r for r in result.tables["near_duplicates"].rows}
    assert source in near and "hash" in near["copy-q85.jpg"][6] and near["copy-q85.jpg"][0] == near[source][0], near
    assert neighbour not in near or near[neighbour][0] != near[source][0], near
    assert result.counts["near-duplicate pairs by pHash"] >= 1


@pytest.mark.parametrize("finding, planted", [("dark", "planted-dark.png"), ("blurry", "planted-blurred.png"),
                                               ("low_information", "planted-blank.png")])
def test_dark_blurred_and_blank_images_are_found_and_the_normal_one_is_not(planted_images, finding, planted):
    """#28 point 4: each planted image in its finding's table and section; the cell they were made from in none."""
    root, _, _, normal, result = planted_images
    flagged = [Path(r[1]).name for r in result.tables[finding].rows]
    assert planted in flagged, result.tables[finding].rows
    assert all(normal not in {Path(r[1]).name for r in result.tables[name].rows}
               for name in ("dark", "bright", "blurry", "low_information", "odd_size", "odd_aspect_ratio"))


def test_image_findings_have_their_sections_and_csvs(planted_images, tmp_path):
    result = planted_images[4]
    written = {p.name for p in result.write(tmp_path / "out")}
    assert {"dark.csv", "blurry.csv", "low_information.csv", "odd_size.csv"} <= written
    for name in IMAGE_FINDINGS:  # a statistic of its own beside width and height (odd sizes showed "width" twice)
        header = result.tables[name].header
        assert len(set(header)) == len(header) and header[:3] == ["rank", "path", "label"], (name, header)
    page = (tmp_path / "out" / "audit.html").read_text()
    for title in ("Dark images", "Blurry images", "Low-information images"):
        section = page.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]
        assert "data:image/jpeg;base64," in section, title


def test_a_reencoded_and_a_cropped_copy_of_a_cell_are_confirmed_by_pixels_and_its_neighbour_is_not(planted_images):
    """#28 copies by pixels: the JPEG q85 copy and the 2% crop join their source's cluster, found by "pixels"
    (the crop's hash and embedding are as far from it as a neighbouring cell's: docs/audit.md); the
    neighbouring cell of the module, the cell most like it, does not."""
    root, source, neighbour, _, result = planted_images
    near = {Path(r[1]).name: r for r in result.tables["near_duplicates"].rows}
    for copy in ("copy-q85.jpg", "copy-crop2.png"):
        assert copy in near and "pixels" in near[copy][6] and near[copy][0] == near[source][0], near
    assert neighbour not in near or near[neighbour][0] != near[source][0], near
    assert result.counts["near-duplicate pairs by pixels"] >= 2


def test_a_file_changed_since_extraction_is_judged_without_pixels_and_said_so(planted_images, tmp_path):
    """The crop's file now holds other bytes: its pairs are judged by embedding and pHash only (the crop
    leaves its source's cluster, as before the pixel check), and one note says how many images."""
    from featx.auditing._audit import audit

    folder = Path(shutil.copytree(planted_images[0].parent, tmp_path / "copy"))
    Image.new("L", (300, 300), 99).save(folder / "images" / "copy-crop2.png")
    result = audit(folder / "store.h5", n_jobs=1, progress=False)
    near = {Path(r[1]).name: r for r in result.tables["near_duplicates"].rows}
    assert "copy-crop2.png" not in near or near["copy-crop2.png"][0] != near.get(planted_images[1], [None])[0], near
    notes = [n for n in result.notes if "could not be read as they were extracted" in n]
    assert len(notes) == 1 and notes[0].startswith("1 images"), result.notes
    plain = audit(folder / "store.h5", n_jobs=1, progress=False, pixels=False)
    assert "near-duplicate pairs by pixels" not in plain.counts and not any("pixels" in r[6] for r in plain.tables["near_duplicates"].rows)



def test_copies_of_a_cell_align_within_the_pixel_threshold_and_its_most_alike_neighbour_does_not(tmp_path):
    """The check itself on real cells: a JPEG q85 copy and a 2% crop of cell1580 differ from it by at most
    DIFFERENCE once aligned; cell1579, its neighbour in the module and the closest distinct pair of all
    2,624 published cells (0.138, docs/audit.md), by more."""
    from featx.datasets import load_elpv
    from featx.images._copies import DIFFERENCE, pixel_differences, thumbnail

    found = {Path(f).name: f for f in load_elpv().filenames}
    cell = Image.open(found["cell1580.png"])
    w, h = cell.size
    cell.save(tmp_path / "q85.jpg", quality=85)
    cell.crop((round(0.01 * w), round(0.01 * h), w - round(0.01 * w), h - round(0.01 * h))).save(tmp_path / "crop2.png")
    files = [found["cell1580.png"], tmp_path / "q85.jpg", tmp_path / "crop2.png", found["cell1579.png"]]
    q85, crop, neighbour = pixel_differences(lambda i: thumbnail(str(files[i])), [0, 0, 0], [1, 2, 3])
    assert q85 <= DIFFERENCE and crop <= DIFFERENCE < neighbour, (q85, crop, neighbour)


def test_a_mirrored_copy_is_not_refuted_and_the_neighbour_stays_distinct_when_turned(tmp_path):
    """A pair the embedding or hash found and the pixels would refute is checked again with one image turned
    and mirrored: a mirrored, rotated q85 copy of cell1580 is then within DIFFERENCE; cell1579 still is not."""
    from featx.datasets import load_elpv
    from featx.images._copies import DIFFERENCE, pixel_differences, thumbnail, turned_differences

    found = {Path(f).name: f for f in load_elpv().filenames}
    Image.open(found["cell1580.png"]).transpose(Image.Transpose.TRANSPOSE).save(tmp_path / "turned.jpg", quality=85)
    files = [found["cell1580.png"], tmp_path / "turned.jpg", found["cell1579.png"]]
    thumb = lambda i: thumbnail(str(files[i]))  # noqa: E731
    assert pixel_differences(thumb, [0], [1])[0] > 0.5  # refuted as it stands
    turned, neighbour = turned_differences(thumb, [0, 0], [1, 2])
    assert turned <= DIFFERENCE < neighbour, (turned, neighbour)
