"""Writing featx's outputs: check up front that each can be written, then write each atomically.

Every file featx writes (models, CSVs, reports, PNGs, audit pages, checkpoints, fine-tuned networks) goes to a
temporary file beside it, flushed to disk and moved over it (os.replace), so a kill leaves the old file or the
new one, never half of one. A set of files that belong together (a model and its report, an audit) ends with a
manifest written last: which run wrote them, and each file's sha256, which `check_manifest` compares.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from featx.errors import OutputError

if TYPE_CHECKING:
    from tqdm import tqdm

MANIFEST_FORMAT = "featx-outputs/1"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output(path: str | os.PathLike, option: str, folder: bool = False,
                 reads: Sequence[str | os.PathLike] = ()) -> Path:
    """Raise OutputError (one line naming `path` and `option`) unless the file `path` (the folder, with
    `folder`) can be written: its folder exists or can be made, and a byte can be written there (so a
    read-only or full disk is found before any work), and it is none of the files the command `reads` nor an
    image in a folder it reads (a store written over with its own export), nor, with `folder`, a folder in
    one it reads (its files would be read as inputs next time) nor one that holds an input. Creates nothing;
    returns the path."""
    from featx.images._inputs import is_image_file

    path = Path(path)
    for source in reads:
        if not os.path.exists(source):
            continue
        if path.exists() and os.path.samefile(path, source):
            raise OutputError(f"cannot write {path}: it is the input {source}; choose another {option}")
        inside = os.path.isdir(source) and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(source))
        if inside and folder:
            raise OutputError(f"cannot write {path}: it is inside the input folder {source}, whose images a rerun "
                              f"would read with it; choose another {option}")
        if inside and path.exists() and is_image_file(path):
            raise OutputError(f"cannot write {path}: it is an image of the input folder {source}; choose another {option}")
        if folder and Path(os.path.realpath(source)).is_relative_to(os.path.realpath(path)):
            raise OutputError(f"cannot write {path}: it holds the input {source}, which this run would write over "
                              f"(audit's clean.csv) or leave among its outputs; choose another {option}")
    if path.is_dir() != folder and path.exists():
        raise OutputError(f"cannot write {path}: it is {'not ' if folder else ''}a folder; choose another {option}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:  # the folder to be made is made in here
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is not a folder; choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)} ({os.path.abspath(existing)}); choose another {option}") from None
    return path


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  reads: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """`check_output` of each file of one run (option -> path; None: not asked for), refusing one that two
    options name (the second written would replace the first); returns the paths checked."""
    named: dict[str, str] = {}
    checked = []
    for option, path in outputs.items():
        if path is None:
            continue
        same = named.setdefault(os.path.realpath(path), option)
        if same != option:
            raise OutputError(f"cannot write {path}: {same} writes it too; choose another {option}")
        checked.append(check_output(path, option, reads=reads))
    return checked


def _umask() -> int:
    """The process's umask, read without setting it where Linux shows it (setting it for a moment would give
    files that other threads create meanwhile mode 0666)."""
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, for writers that go by it) for the block to write; when
    the block ends it is flushed to disk (unless not `sync`: the rename alone is enough against a killed
    process, not a power cut), given the mode the umask gives new files (not mkstemp's 0600) and moved over
    `path`. If the block raises, the temporary file is removed and `path` left as it was. A failed write
    (read-only, disk full) raises OutputError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_file_beside(path, f".tmp{path.suffix}")
        yield tmp
        if sync:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def new_file_beside(path: Path, suffix: str) -> Path:
    """A new empty file beside `path` for a writer to fill and move over it: created exclusively under a
    random name (never a fixed name that someone planted as a link to another file), with the mode the umask
    gives new files (not mkstemp's 0600)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_options: Any) -> Iterator:
    """`open(path, mode)` written atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_options) as file:
        yield file


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: str | os.PathLike, files: Sequence[str | os.PathLike]) -> Path:
    """Write the JSON manifest of a set of `files` (written last: its absence marks an unfinished set): the
    run (command, time, featx version) and each file's sha256, by its path relative to the manifest."""
    from featx import __version__

    path = Path(path)
    manifest = {
        "format": MANIFEST_FORMAT,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "featx": __version__,
        "files": {os.path.relpath(file, path.parent): sha256(file) for file in files},
    }
    with atomic_write(path, "w") as out:
        out.write(json.dumps(manifest, indent=2) + "\n")
    return path


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest of the set written beside `path` (a model and its report, a report prefix): PATH.manifest.json."""
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


@contextlib.contextmanager
def output_set(manifest: str | os.PathLike) -> Iterator[list[Path]]:
    """Files written together: the previous set of `manifest` is removed first (`remove_listed`: a file that
    run wrote and this one does not would pass for this run's), the block appends each file it writes to the
    list given, and the manifest of them is written when the block ends (not if it raises)."""
    manifest = Path(manifest)
    remove_listed(manifest)
    files: list[Path] = []
    yield files
    write_manifest(manifest, files)


def remove_listed(manifest: str | os.PathLike) -> list[Path]:
    """Remove the set of files a previous run listed in `manifest` (those still as it wrote them, in the
    manifest's folder; a file changed since is left), then the manifest, so that none of them is taken for a
    file of the next run; returns those removed. No manifest: nothing to remove."""
    manifest = Path(manifest)
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # none, or not one featx wrote: nothing of it is known to be a previous run's
    folder, removed = manifest.parent.resolve(), []
    for name, digest in files.items():
        path = manifest.parent / name
        if path.resolve().parent == folder and path.is_file() and sha256(path) == digest:
            path.unlink()
            removed.append(path)
    manifest.unlink(missing_ok=True)
    return [*removed, manifest]


def check_manifest(path: str | os.PathLike) -> list[str]:
    """The files of a manifest's set that are missing or not those the run wrote (empty: the set is whole)."""
    path = Path(path)
    files = json.loads(path.read_text())["files"]
    return [name for name, digest in files.items()
            if not (path.parent / name).is_file() or sha256(path.parent / name) != digest]


class _Lines:
    """A stream that turns tqdm's carriage-return redraws into whole lines, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, enabled: bool = True, desc: str = "extract", leave: bool = True, unit: str = "img") -> tqdm:
    """featx's one progress bar, on stderr: redrawn on a terminal, a line every few seconds otherwise (pipes,
    logs). `leave=False`: a terminal's bar is cleared when done (a line is kept in a log)."""
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=sys.stderr, leave=leave)
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=_Lines(sys.stderr), mininterval=5,
                ascii=True, position=0)  # a line each: a bar inside another moved the cursor up ("\x1b[A") in logs
