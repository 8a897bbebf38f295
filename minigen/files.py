"""Writing files all-or-nothing: every checkpoint, figure, JSON and page minigen writes goes through here.

A file is first written to a temporary name in the same folder, flushed to
disk, and then renamed over the target with ``os.replace`` — an atomic
operation — so a run killed at any moment leaves either the old file or the
new one, never half of one.
"""
from __future__ import annotations

import errno
import os
import tempfile
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "default_file_mode"]


def default_file_mode(path: str) -> int:
    """The permission bits a plain ``open(path, 'w')`` would give (an existing file keeps its own)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux: read the umask without changing it (os.umask is process-global)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write: Callable[[str], None], *, create_dirs: bool = True) -> str:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, fsync it, rename it over ``path``.

    The temp file keeps ``path``'s suffix, so writers that pick a format from
    the name (``savefig``, ``np.savez``) behave. On any error the temp file is
    removed and the old ``path`` is untouched. Returns ``path`` as a string.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if create_dirs:
        os.makedirs(directory, exist_ok=True)
    elif not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "the directory does not exist", directory)
    base, suffix = os.path.splitext(os.path.basename(path))
    mode = default_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp" + suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return path


def atomic_write_text(path, text: str) -> str:
    """:func:`atomic_write` for a text file (UTF-8)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return atomic_write(path, write)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (best effort; not possible on every OS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
