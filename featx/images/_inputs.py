"""Find images and their labels: class folders, flat folders, CSV files of path,label, file-name patterns."""
from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from featx.errors import BadInputError, InputWarning, MissingPathError, ParameterError
from featx.images._failures import failure_lines

# CSV files of paths featx reads and writes: UTF-8, and a file name that is not (Linux names are bytes) kept byte for
# byte through Python's surrogate escapes, so that a listing featx wrote names the same files when read back
CSV_TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
UNLABELED = -1


@dataclass
class ImageList:
    """Image files in a deterministic order; labels index into classes (-1: no label)."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # absolute folders searched: the store follows them
    # each input as the user gave it (a folder as given + the path below it), once per time it was named, and
    # its entry in paths: predict writes a row for each
    given: list[str] = field(default_factory=list)
    given_rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Sequence[int]) -> ImageList:
        """The images at `rows`, with their labels (the inputs as given are not carried over)."""
        return replace(self, paths=[self.paths[i] for i in rows], labels=self.labels[np.asarray(rows, dtype=np.int64)],
                       given=[], given_rows=[])


def is_image_file(path: str | os.PathLike) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def display_path(path: str | os.PathLike) -> str:
    """The path relative to the working directory when it lies below it, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def read_split(path: str | os.PathLike) -> dict[str, str]:
    """path (as `display_path` gives it) -> split name, from a CSV of path,split (paths relative to the CSV;
    header optional)."""
    split = {display_path(p): s for p, s in read_csv(Path(path)) if s}
    if not split:
        raise BadInputError(f"{path}: no rows of path,split")
    return split


def splits_of(split_csv: str | os.PathLike, paths: Sequence[str], where: str | os.PathLike,
              classes: Sequence[str] = ()) -> list[str]:
    """The split `split_csv` (as `read_split` reads it) gives each of `paths`, the files of `where` ("" for a
    file it omits). Refused: a CSV none of whose files is among them (paths relative to another folder would
    else give no split at all, silently), and one whose names are all `classes` (a labelled list, such as
    featx demo's test.csv, would else give class names as splits); the files it names that are not among
    them are counted in an InputWarning."""
    split = read_split(split_csv)
    if classes and set(split.values()) <= set(classes):
        raise BadInputError(f"{split_csv} names classes ({', '.join(sorted(set(split.values()))[:3])}), not splits: "
                            "give a CSV of path,split (train, test...); a list of the test part's files, such as "
                            "featx demo's test.csv, is what featx compare --split-csv takes")
    found = len(split.keys() & set(paths))
    if not found:
        raise BadInputError(f"{split_csv}: none of its {len(split)} files is among the {len(paths)} files of {where} "
                            "(its paths are relative to the CSV file)")
    if found < len(split):
        warnings.warn(InputWarning(f"{split_csv}: {len(split) - found} of its {len(split)} files are not among the "
                                   f"files of {where}, left out"), stacklevel=3)
    return [split.get(path, "") for path in paths]


def _walk(root: str) -> Iterable[tuple[str, str | None]]:
    """(path, class folder name or None) for every image below root, sorted; paths start with root as given.

    Each real folder is walked once: a symlinked folder is followed only when it leads outside root and to a
    folder not walked yet (by device and inode), so `a/up -> ..` adds nothing (os.walk(followlinks=True)
    followed it 40 levels deep: 487 paths for 4 images). Skipped and broken links are reported once each
    (an InputWarning); a broken link named as an image is kept, to be recorded as unreadable.
    """
    top = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()

    def visit(directory: str, label: str | None) -> Iterable[tuple[str, str | None]]:
        info = os.stat(directory)
        seen.add((info.st_dev, info.st_ino))
        try:
            with os.scandir(directory) as scan:
                entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:  # an unreadable folder: the others are walked
            _report_skipped(directory, exc)
            return
        folders = []
        for entry in entries:
            try:
                is_folder = entry.is_dir()
            except OSError as exc:  # a symlink loop of files (a.jpg -> b.jpg -> a.jpg)
                _report_skipped(entry.path, exc)
                continue
            if is_folder:
                folders.append(entry)
            elif is_image_file(entry.name):
                yield entry.path, label
            elif entry.is_symlink() and not os.path.exists(entry.path):
                _report_link(entry.path, "it leads nowhere")
        for entry in folders:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                info = os.stat(entry.path)
                if os.path.commonpath([top, target]) == top or (info.st_dev, info.st_ino) in seen:
                    ancestor = os.path.commonpath([target, os.path.realpath(directory)]) == target
                    _report_link(entry.path, "a loop" if ancestor else "its folder is walked already")
                    continue
            yield from visit(entry.path, entry.name if directory == root else label)

    yield from visit(root, None)


def _report_skipped(path: str, exc: OSError) -> None:
    warnings.warn(InputWarning(f"skipped {_label_text(path)}: {exc.strerror or exc}"), stacklevel=4)


def _report_link(path: str, why: str) -> None:
    warnings.warn(InputWarning(f"skipped symlink {_label_text(path)} -> {_label_text(os.readlink(path))}: {why}"), stacklevel=4)


def _label_text(name: str | None) -> str | None:
    """A class name from a folder or file name, as printable text: bytes that are not UTF-8 (held by Python
    as surrogates, which JSON, plots and terminals refuse) are written as \\xNN escapes."""
    return None if name is None else os.fsencode(name).decode("utf-8", "backslashreplace")


def _csv_rows(text: str, folder: Path) -> list[list[str]]:
    """Rows of a CSV file whose delimiter is a comma, semicolon, tab or runs of spaces (ELPV's labels.csv);
    without a delimiter character, a line naming an existing file (spaces and all) is one path."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    try:  # csv's Sniffer, not a hand-written guess: it also understands quoted fields
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t")
    except csv.Error:
        return [[line.strip()] if (folder / line.strip()).exists() else line.split() for line in lines]
    return [row for row in csv.reader(lines, dialect) if any(cell.strip() for cell in row)]


def _read_rows(path: Path) -> tuple[list[str] | None, list[list[str]], str]:
    """The header row (None: none), the other rows and the text of a CSV file of images."""
    try:
        text = path.read_text(**CSV_TEXT)
    except OSError as exc:
        raise BadInputError(f"cannot read CSV file {path}: {exc}") from exc
    rows = _csv_rows(text, path.parent)
    if rows and _is_header(rows[0][0].strip(), path.parent):
        return [cell.strip() for cell in rows[0]], rows[1:], text
    return None, rows, text


def _is_header(cell: str, folder: Path) -> bool:
    """A first cell that names no image and starts with a header's word: "path", "file", "filename" or "image"
    (the first word only: in a file of another delimiter, "path|label", the header is one cell). A path such as
    image/1.png or file-2.jpg is a row."""
    if os.path.splitext(cell)[1].lower() in IMAGE_EXTENSIONS or os.path.lexists(folder / cell):
        return False
    return re.split(r"[^\w]", cell.lower())[0] in ("path", "file", "filename", "image")


def _row_path(row: list[str], folder: Path) -> str:
    """A row's file, relative paths taken from the CSV file's folder."""
    file = Path(row[0].strip())
    return str(file if file.is_absolute() else folder / file)


def read_csv(path: Path) -> Iterable[tuple[str, str | None]]:
    """Rows of path[,label]; relative paths are relative to the CSV file. A header row is optional.

    A file none of whose paths exist is refused, quoting its first line: it is not a list of images.
    """
    _, rows, text = _read_rows(path)
    found = [(_row_path(row, path.parent), row[1].strip() if len(row) > 1 and row[1].strip() else None) for row in rows]
    if found and not any(os.path.lexists(file) for file, _ in found):
        first = next(line for line in text.splitlines() if line.strip())
        raise BadInputError(
            f"{path}: expected rows of path,label (comma, semicolon, tab or space separated), with paths "
            f"relative to the CSV file; none of its {len(found)} paths exists. First line: {first!r}"
        )
    return found


def read_column(sources: str | os.PathLike | Sequence[str | os.PathLike], column: str) -> dict[str, str]:
    """path (as `display_path` gives it) -> its cell in `column` (a number from 1, or a name in the header row)
    of every CSV file among `sources` (ELPV's labels.csv: column 3, the cell type). Empty cells are left out."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = [Path(s) for s in sources if Path(s).suffix.lower() == ".csv" and Path(s).is_file()]
    if not files:
        raise BadInputError(f"a column needs a CSV file of images among the inputs, not only {', '.join(map(str, sources))}")
    found: dict[str, str] = {}
    for path in files:
        header, rows, _ = _read_rows(path)
        if column.isdigit() and int(column) >= 1:
            index = int(column) - 1
        elif header is not None and column in header:
            index = header.index(column)
        else:
            named = f"its header: {', '.join(header)}" if header else "it has no header row: give the column's number"
            raise BadInputError(f"{path}: no column {column!r} ({named})")
        if rows and all(index >= len(row) for row in rows):
            raise BadInputError(f"{path}: no column {column} (its rows have {max(map(len, rows))})")
        found.update((display_path(_row_path(row, path.parent)), row[index].strip())
                     for row in rows if index < len(row) and row[index].strip())
    return found


def _label_from_name(pattern: re.Pattern, path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    match = pattern.search(stem)
    if match is None:
        raise BadInputError(f"--label-pattern '{pattern.pattern}' does not match the file name of {path}")
    if "label" in pattern.groupindex:
        return match.group("label")
    return match.group(1) if pattern.groups else match.group(0)


def find_images(sources: str | os.PathLike | Sequence[str | os.PathLike], label_pattern: str | None = None) -> ImageList:
    """Collect images from folders (subfolder name = class), image files and CSV files, in order.

    `label_pattern` is a regular expression searched in each file name without extension; its group
    `label`, else its first group, else the whole match, is the label (Oxford Pets: ``(.+)_\\d+$``).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    try:
        pattern = re.compile(label_pattern) if label_pattern else None
    except re.error as exc:
        raise ParameterError(f"invalid --label-pattern '{label_pattern}': {exc}") from None
    entries: dict[str, str | None] = {}
    row: dict[str, int] = {}
    given: list[str] = []
    roots: list[str] = []
    relabelled: list[tuple[str, str]] = []
    for as_given in map(os.fspath, sources):
        source = Path(as_given)
        roots.append(os.path.abspath(source if source.is_dir() else source.parent))
        if source.is_dir():
            found = _walk(as_given)
        elif source.suffix.lower() == ".csv" and source.is_file():
            found = read_csv(source)
        elif source.is_file():
            found = [(as_given, None)]
        else:
            raise MissingPathError(f"no such file or folder: {source}")
        for path, label in found:
            key = display_path(path)
            given.append(path)
            row.setdefault(key, len(row))
            label = _label_text(_label_from_name(pattern, key) if pattern else label)
            if entries.setdefault(key, label) != label and label is not None and entries[key] is not None:
                relabelled.append((key, f"labelled {entries[key]} and {label}: kept {entries[key]}"))
    if relabelled:  # a listing's mistake a classifier would learn from silently
        warnings.warn(InputWarning("\n".join([f"{len(relabelled)} file{'s' * (len(relabelled) > 1)} listed with two labels, the first kept:",
                                               *failure_lines(relabelled, prefix="  ")])), stacklevel=2)
    if not entries:
        raise BadInputError(
            f"no images found in {', '.join(map(str, sources))} "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    classes = sorted({label for label in entries.values() if label is not None})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[l] if l is not None else UNLABELED for l in entries.values()], dtype=np.int64)
    return ImageList(paths=list(entries), labels=labels, classes=classes, roots=sorted(set(roots)), given=given,
                     given_rows=[row[display_path(path)] for path in given])
