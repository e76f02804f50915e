"""Finding images and labels: class folders, flat folders, CSV files, file-name patterns."""
import os
import re

import numpy as np
import pytest

from featx.errors import BadInputError, InputWarning, ParameterError
from featx.images._inputs import find_images


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_class_folders_recursive_case_insensitive_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["dog/b.JPG", "dog/a.png", "cat/x.jpeg", "cat/deep/y.WebP", "cat/notes.txt", "cat/.hidden.jpg"]:
        touch(tmp_path / "data" / name)
    images = find_images("data")
    assert images.paths == [os.path.join("data", p) for p in ["cat/x.jpeg", "cat/deep/y.WebP", "dog/a.png", "dog/b.JPG"]]
    assert images.classes == ["cat", "dog"]
    assert images.labels.tolist() == [0, 0, 1, 1]


def test_flat_folder_has_no_labels(tmp_path):
    for name in ["1.jpg", "2.tif", "3.gif", "4.bmp"]:
        touch(tmp_path / name)
    images = find_images(tmp_path)
    assert len(images) == 4 and images.classes == [] and np.all(images.labels == -1)


def test_csv_with_header_and_relative_paths(tmp_path):
    touch(tmp_path / "imgs" / "a.png")
    touch(tmp_path / "imgs" / "b.png")
    (tmp_path / "list.csv").write_text("path,label\nimgs/b.png,zebra\nimgs/a.png,ant\n")
    images = find_images(tmp_path / "list.csv")
    assert [os.path.basename(p) for p in images.paths] == ["b.png", "a.png"]
    assert images.classes == ["ant", "zebra"] and images.labels.tolist() == [1, 0]


def test_a_csv_label_is_its_second_column_whatever_columns_follow(tmp_path):
    """path,label,... : the label is the second cell, not the last (ELPV's labels.csv and compare's --group-column
    files carry a third column, a group such as the cell type)."""
    touch(tmp_path / "a.png")
    touch(tmp_path / "b.png")
    (tmp_path / "list.csv").write_text("a.png,ant,mono\nb.png,bee,poly\n")
    images = find_images(tmp_path / "list.csv")
    assert [os.path.basename(p) for p in images.paths] == ["a.png", "b.png"]
    assert images.classes == ["ant", "bee"] and images.labels.tolist() == [0, 1]


@pytest.mark.parametrize("first", ["image/1.png", "image-1.png", "path/x.png", "file_2", "Image 3.jpg"])
def test_a_first_row_whose_path_starts_like_a_header_is_a_row(tmp_path, first):
    """Only a first cell that names no image is a header: image/1.png was dropped as one."""
    touch(tmp_path / first)
    touch(tmp_path / "other.png")
    (tmp_path / "list.csv").write_text(f"{first},bad\nother.png,good\n")
    images = find_images(tmp_path / "list.csv")
    assert [os.path.relpath(p, tmp_path) for p in images.paths] == [first, "other.png"]
    assert images.labels.tolist() == [0, 1]
    (tmp_path / "one.csv").write_text(f"{first},bad\n")
    assert len(find_images(tmp_path / "one.csv")) == 1


def test_a_file_listed_with_two_labels_keeps_the_first_and_says_so(tmp_path):
    touch(tmp_path / "a.png")
    touch(tmp_path / "b.png")
    (tmp_path / "one.csv").write_text("a.png,bad\nb.png,good\na.png,bad\n")  # the same label twice: said nothing
    (tmp_path / "two.csv").write_text("a.png,good\n")
    with pytest.warns(InputWarning, match=r"(?s)1 file listed with two labels.*a.png: labelled bad and good: kept bad"):
        images = find_images([tmp_path / "one.csv", tmp_path / "two.csv"])
    assert images.labels.tolist() == [0, 1] and images.classes == ["bad", "good"]


def test_several_sources_and_label_pattern(tmp_path):
    for name in ["Abyssinian_12.jpg", "Abyssinian_2.jpg", "great_pyrenees_101.jpg"]:
        touch(tmp_path / "pets" / name)
    touch(tmp_path / "more" / "Bengal_1.png")
    images = find_images([tmp_path / "pets", tmp_path / "more"], label_pattern=r"(.+)_\d+$")
    assert images.classes == ["Abyssinian", "Bengal", "great_pyrenees"]
    assert images.labels.tolist() == [0, 0, 2, 1]


def test_label_pattern_that_does_not_match_names_the_file(tmp_path):
    touch(tmp_path / "noseparator.jpg")
    with pytest.raises(BadInputError, match="noseparator.jpg"):
        find_images(tmp_path, label_pattern=r"(.+)_\d+$")


def test_empty_and_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(BadInputError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(BadInputError, match="no such file or folder"):
        find_images(tmp_path / "missing")


def test_symlinked_folders_are_walked_once_and_loops_reported_once(elpv_copy, tmp_path):
    """#25 point 4: `a/up -> ..` made os.walk(followlinks=True) list 487 paths for 4 images, 40 levels deep."""
    outside = tmp_path / "more"
    outside.mkdir()
    cell = sorted(elpv_copy.rglob("*.png"))[0]
    (outside / "extra.png").write_bytes(cell.read_bytes())
    os.symlink("..", elpv_copy / "defective" / "up")  # a loop
    os.symlink("../defective", elpv_copy / "functional" / "again")  # a folder walked anyway
    os.symlink(outside, elpv_copy / "functional" / "more")  # outside: followed once...
    os.symlink(outside, elpv_copy / "possibly_defective" / "more")  # ...not twice
    os.symlink(outside, outside / "self")  # a loop outside
    os.symlink(tmp_path / "gone", elpv_copy / "defective" / "gone")  # broken
    with pytest.warns(InputWarning) as caught:
        images = find_images(elpv_copy)
    assert len(images) == 21 and len(set(map(os.path.realpath, images.paths))) == 21
    assert os.path.join(str(elpv_copy), "functional", "more", "extra.png") in images.paths
    assert images.classes == ["defective", "functional", "likely_defective", "possibly_defective"]
    messages = sorted(str(w.message).split(" -> ")[0].removeprefix("skipped symlink ") for w in caught)
    assert messages == sorted(str(p) for p in [elpv_copy / "defective" / "gone", elpv_copy / "defective" / "up",
                                                elpv_copy / "functional" / "again", elpv_copy / "functional" / "more" / "self",
                                                elpv_copy / "possibly_defective" / "more"])
    assert sum("a loop" in str(w.message) for w in caught) == 2


def test_a_file_symlink_loop_and_an_unreadable_folder_are_skipped_with_a_warning(elpv_copy, monkeypatch):
    """They ended the walk in an OSError (ELOOP, EACCES) traceback; now each is one warning, the rest is found."""
    os.symlink("b.jpg", elpv_copy / "defective" / "a.jpg")
    os.symlink("a.jpg", elpv_copy / "defective" / "b.jpg")
    closed = str(elpv_copy / "functional")
    scandir = os.scandir

    def unreadable(path="."):  # as root, chmod 000 reads anyway: the permission error itself
        if os.fspath(path) == closed:
            raise PermissionError(13, "Permission denied", closed)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", unreadable)
    with pytest.warns(InputWarning) as caught:
        images = find_images(elpv_copy)
    assert len(images) == 15 and "functional" not in images.classes
    assert sorted(str(w.message) for w in caught) == [
        f"skipped {elpv_copy / 'defective' / 'a.jpg'}: Too many levels of symbolic links",
        f"skipped {elpv_copy / 'defective' / 'b.jpg'}: Too many levels of symbolic links",
        f"skipped {closed}: Permission denied"]


def test_label_pattern_errors_show_the_pattern_as_typed(tmp_path):
    """#25 point 9: the error showed '(.+)_\\\\d+$', doubled by repr."""
    touch(tmp_path / "noseparator.jpg")
    with pytest.raises(BadInputError, match=r"--label-pattern '\(\.\+\)_\\d\+\$' does not match"):
        find_images(tmp_path, label_pattern=r"(.+)_\d+$")
    with pytest.raises(ParameterError, match=r"invalid --label-pattern '\\d\(': "):  # a bad value: exit 2, as any
        find_images(tmp_path, label_pattern=r"\d(")


def test_csv_of_another_delimiter_does_not_count_its_header(tmp_path):
    """#25 point 9: a pipe-separated file's error said 'none of its 3 paths' for a header and 2 rows."""
    touch(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path|label\na.png|ant\nb.png|bee\n")
    with pytest.raises(BadInputError, match=re.escape("none of its 2 paths exists. First line: 'path|label'")):
        find_images(tmp_path / "list.csv")
