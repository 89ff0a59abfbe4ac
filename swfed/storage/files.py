"""Secrets at rest: the data directory and database files are the owner's alone.

The database holds the tenants' private signing seeds, so ``data_dir`` is
0700 and the database, its WAL and shared-memory files and backups are 0600
*from the moment they are created*: the process runs with umask 077
(:func:`private_umask`, set first thing by the CLI and the server). Files
that already exist keep their mode; a start that finds them readable by
others warns with the ``chmod`` that fixes it (:func:`loose_files`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SUFFIXES = ("", "-wal", "-shm")


def private_umask() -> None:
    """New files 0600, new directories 0700, for this whole process."""
    os.umask(0o077)


def loose_files(data_dir: Path, db_file: Path) -> list[tuple[Path, int]]:
    """(path, mode) of the data directory and database files others can read or enter."""
    out = []
    for path in (data_dir, *(Path(f"{db_file}{s}") for s in SUFFIXES)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            out.append((path, mode))
    return out


def fix_for(data_dir: Path, db_file: Path) -> str:
    return f"chmod 700 {data_dir} && chmod 600 {db_file}*"


# -- stamps -------------------------------------------------------------------
#
# The CLI writes the SQLite file directly, possibly while the server runs.
# When its commit changed something a running server keeps in memory (the
# tenants, who tokens belong to), it then replaces a small stamp file next to
# the database; the server looks at the stamp (one stat(), no database read)
# and reloads only when it changed. os.replace() gives the stamp a new inode
# each time, so two bumps within one tick of the file system's clock are still
# told apart.

#: What stat() says about a stamp: (inode, mtime ns, size); None if absent.
Stamp = tuple[int, int, int] | None


def bump_stamp(db_file: Path, name: str) -> None:
    """Tell a running server that what ``name`` stands for changed (call after the commit)."""
    path = db_file.parent / name
    tmp = path.with_name(f".{name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()} {os.urandom(8).hex()}\n")
    os.replace(tmp, path)


def stamp_path(db_file: Path, name: str) -> str:
    """Where the stamp ``name`` lives (keep it: :func:`read_stamp_at` runs per request)."""
    return str(db_file.parent / name)


def read_stamp_at(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


#: Held (``flock``, exclusive) by a running server for as long as it runs; the
#: file says its pid. ``swfed admin restore`` takes it too, so neither can start
#: while the other works, and a server killed outright lets go of it at once.
LOCK_NAME = "swfed.lock"


class DataDirBusy(Exception):
    """Another process holds ``data_dir``'s lock; ``pid`` is what its file says."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(f"{path} is held by pid {pid or '?'}")
        self.path = path
        self.pid = pid


def lock_data_dir(data_dir: Path) -> int:
    """Take ``data_dir``'s lock and write our pid in it; the fd to keep open.

    Raises DataDirBusy when another process holds it (never waits).
    """
    import fcntl

    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise DataDirBusy(path, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock_data_dir(fd: int) -> None:
    os.close(fd)  # closing the last descriptor lets go of the flock
