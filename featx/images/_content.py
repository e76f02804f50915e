"""Content keys: a file's identity is the hash of its bytes, never its path."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

KEY_LENGTH = 32  # hex characters of a 128-bit BLAKE2b digest


class FileStat(NamedTuple):
    """What the stat index compares: a file with all four unchanged is taken to hold the same bytes.

    The inode and the change time catch a file rewritten with the same size and its modification time
    put back (`os.utime` cannot set ctime), and one replaced by another file (rename, copy).
    """

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class Hashed(NamedTuple):
    """A file's content key, or why it could not be read; `stat`: its stat taken before its bytes were read."""

    key: str | None
    error: str | None
    stat: FileStat | None


def content_key(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=KEY_LENGTH // 2).hexdigest()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def unreadable(exc: OSError) -> str:
    """The recorded reason for a file that cannot be read (compared across runs: keep it stable)."""
    return f"unreadable: {exc.strerror or exc}"


def _hash_file(path: str) -> Hashed:
    try:
        with open(path, "rb") as f:
            stat = FileStat.of(os.fstat(f.fileno()))  # before reading: a change while reading changes the stat
            return Hashed(content_key(f.read()), None, stat)
    except OSError as exc:
        return Hashed(None, unreadable(exc), None)


def content_keys(paths: Sequence[str], threads: int = 8) -> list[Hashed]:
    """The content key (or the reason it is missing) of each path. Threads overlap the file reads
    (hashlib drops the GIL)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_hash_file, paths, chunksize=64))


def _stat_or_none(path: str) -> FileStat | None:
    try:
        return FileStat.of(os.stat(path))
    except OSError:
        return None


def stats(paths: Sequence[str], threads: int = 8) -> list[FileStat | None]:
    """Each path's stat (None where it cannot be had); threads overlap the round trips of network file systems."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_stat_or_none, paths, chunksize=256))
