"""Content keys: a file's identity is the hash of its bytes, never its path."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

KEY_LENGTH = 32  # hex characters of a 128-bit BLAKE2b digest


def content_key(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=KEY_LENGTH // 2).hexdigest()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def unreadable(exc: OSError) -> str:
    """The recorded reason for a file that cannot be read (compared across runs: keep it stable)."""
    return f"unreadable: {exc.strerror or exc}"


def _key_or_error(path: str) -> tuple[str | None, str | None]:
    try:
        return content_key(read_bytes(path)), None
    except OSError as exc:
        return None, unreadable(exc)


def content_keys(paths: Sequence[str], threads: int = 8) -> list[tuple[str | None, str | None]]:
    """(key, None) or (None, reason) for each path. Threads overlap the file reads (hashlib drops the GIL)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_key_or_error, paths, chunksize=64))
