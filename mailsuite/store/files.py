"""
Durable file writes shared by the disk backends: temp file, fsync, rename, fsync directory.
"""

from __future__ import annotations

import errno
import os

from mailsuite.interfaces import StoreUnavailable


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durably(path: str) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that got a new entry."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip(os.sep))
    makedirs_durably(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    fsync_dir(parent)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unavailable(error: OSError) -> StoreUnavailable:
    """The StoreUnavailable to raise for a failed disk operation."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreUnavailable("mail storage is full")
    return StoreUnavailable("mail storage is unavailable")


def write_synced(path: str, data: bytes, *, mtime_ns: int | None = None, replace=False):
    """
    Write ``data`` to a new file at ``path`` (or truncate it, with ``replace``), set its mtime
    if asked and fsync it; on failure StoreUnavailable is raised and the file is removed.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        raise unavailable(e) from e
    try:
        try:
            write_all(fd, data)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        unlink_quietly(path)
        raise unavailable(e) from e


def write_durably(
    tmp_path: str, final_path: str, data: bytes, *, mtime_ns: int | None = None, replace=False
):
    """
    Put ``data`` at ``final_path`` so that it survives a crash once this returns: write it to
    ``tmp_path`` (same filesystem), fsync, rename into place, fsync the directory.  On failure
    StoreUnavailable is raised and no new file remains; with ``replace`` an existing file at
    ``final_path`` is atomically replaced (and kept as it was on failure).
    """
    write_synced(tmp_path, data, mtime_ns=mtime_ns, replace=replace)
    renamed = False
    try:
        os.rename(tmp_path, final_path)
        renamed = True
        fsync_dir(os.path.dirname(final_path))
    except OSError as e:
        unlink_quietly(tmp_path)
        if renamed and not replace:
            unlink_quietly(final_path)
        raise unavailable(e) from e


def replace_file_durably(path: str, data: bytes) -> None:
    """Atomically replace a small metadata file with ``data`` (callers hold a lock)."""
    write_durably(path + ".tmp", path, data, replace=True)


def append_durably(path: str, data: bytes) -> None:
    """
    Append ``data`` to the file at ``path`` (created if missing) and fsync it.  On failure the
    file is cut back to its old length, so no partial record stays behind, and
    StoreUnavailable is raised.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        raise unavailable(e) from e
    try:
        old_size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, old_size)
            except OSError:
                pass
            raise unavailable(e) from e
    finally:
        os.close(fd)
