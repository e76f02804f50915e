"""The locks of a store. Concurrency: one writer at a time (`<store>.lock`, removed when it ends); readers any
time, also during a write: they see the rows committed when they opened the store (an flock on the store file
keeps commits and reads apart; a reader holds it only for each read, so a writer waits at most for one read).
`describe` names a process holding one, for the messages that say whom a store waits for."""
from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featx.errors import OutputError, StoreInUseError

QUIET_WAIT = 1.0  # seconds a commit waits on readers before it says for whom it waits
READER_LOOK = 0.5  # seconds a writer retries a lock file that a reader holds for the instant of its look


class WriterLock:
    """`<store>.lock` while a writer runs: held exclusively, with the writer's PID inside; removed on release.

    fcntl.flock rather than a library: the kernel drops it when the process dies (kill -9 included), so a
    lock is never stale (a file left behind holds no flock: readers go by the flock, never by the PID, which
    may belong to another process after a restart), and the PID inside lets the error name the writer. Only writers touch this file,
    so readers create nothing. The holder removes it before letting go; a writer that locked a file just
    removed (opened before the unlink) sees that the path no longer names its file and tries again. A reader
    looks for a writer by taking the flock shared for an instant, so a writer retries for READER_LOOK before it
    says the store is in use. The lock is named after the store's real path (symbolic links resolved); two
    hard links to one store are not told apart.
    """

    def __init__(self, store: Path) -> None:
        self.path = WriterLock.path_of(store)
        self.store = store
        self.fd: int | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + READER_LOOK
        while True:
            try:  # never through a link planted under the lock's name: the PID would be written into its target
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot lock the feature store {self.store}: {self.path}: {exc.strerror}"
                                  + (" (a symbolic link: remove it)" if exc.errno == errno.ELOOP else "")) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                if time.monotonic() < deadline:  # perhaps a reader's `active_writer`, which lets go at once
                    time.sleep(0.01)
                    continue
                raise StoreInUseError(f"feature store {self.store} is in use by process {pid} (being written)") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.unlink(self.path)  # while still held: no other writer can hold this file now
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def path_of(store: Path) -> Path:
        """Beside the store's real file: a store named through a symbolic link has the one lock of its file."""
        real = Path(os.path.realpath(store))
        return real.with_name(real.name + ".lock")

    @staticmethod
    def active_writer(store: Path) -> int | None:
        """The PID of another process writing `store`, if any: the lock file's flock is held (a file left by a
        writer killed before it could remove it holds none, though its PID may live again in another process)."""
        try:
            fd = os.open(WriterLock.path_of(store), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its writer writes its PID just after taking it
                for _ in range(100):
                    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    if text.isdigit():
                        return int(text) if int(text) != os.getpid() else None
                    time.sleep(0.01)
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @staticmethod
    def wait_until_written(store: Path) -> None:
        """Block until no process writes `store`: a shared flock on the lock file is granted once its
        writer lets go (or dies); taken and dropped at once, so the next writer is not held up."""
        while WriterLock.active_writer(store):
            try:
                fd = os.open(WriterLock.path_of(store), os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            finally:
                os.close(fd)


class FileLock:
    """flock on the store file itself: a writer holds it exclusively while it changes the file (open, commit,
    close); readers hold it shared for each read. So a reader always sees the file between two commits,
    flushed and consistent, while an extraction runs; a commit waits for the reads in progress, and says
    once for whom when that lasts over QUIET_WAIT."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.fd = os.open(store, os.O_RDONLY)
        self.told = False

    def lock(self, exclusive: bool) -> None:
        if not exclusive:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            return
        deadline = time.monotonic() + QUIET_WAIT
        while True:  # polled for a second, then blocking: a wait as short as a read stays silent
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        if not self.told:
            self.told = True
            readers = ", ".join(describe(pid) for pid in _lock_holders(self.fd)) or "another process"
            print(f"featx: waiting for {readers} to finish reading {self.store}", file=sys.stderr, flush=True)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    @contextmanager
    def held(self) -> Iterator[None]:
        """The shared lock for one read."""
        self.lock(exclusive=False)
        try:
            yield
        finally:
            self.unlock()

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


def _lock_holders(fd: int) -> list[int]:
    """PIDs of the other processes holding an flock on the file of `fd`, from Linux's /proc/locks (none
    elsewhere): lines "1: FLOCK  ADVISORY  READ  <pid> <major>:<minor>:<inode> 0 EOF"."""
    inode = os.fstat(fd).st_ino
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = int(fields[4])
            if pid != os.getpid() and pid not in pids:
                pids.append(pid)
    return pids


def describe(pid: int) -> str:
    """'process 123 (featx fit --clf sgd)': the PID and, where /proc tells it, the command."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [os.fsdecode(w) for w in f.read().split(b"\0") if w]
    except OSError:
        return f"process {pid}"
    if len(words) > 2 and os.path.basename(words[0]).startswith("python") and words[1] != "-c":
        words = words[2:] if words[1] == "-m" else words[1:]  # the script (bin/featx) or module run
    command = " ".join(" ".join([os.path.basename(words[0]), *words[1:]]).split())
    return f"process {pid} ({command if len(command) <= 60 else command[:57] + '...'})"
