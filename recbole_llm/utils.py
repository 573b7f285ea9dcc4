"""Small helpers every layer uses: atomic file writes and the cleanup of interrupted ones.

This module imports nothing from the package (only :mod:`logging` for one message), so that
every layer may write files the same way.
"""

import os
import shutil
import tempfile
import time
from logging import getLogger

#: A temporary file whose name holds no process id is left over after this many seconds.
LEFTOVER_SECONDS = 3600


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_leftovers(path):
    """Remove the temporary files that interrupted :func:`atomic_write` calls of ``path`` left
    (``.<name>.<pid>-<random>.tmp``; a kill -9 between creating and renaming one): those of
    processes no longer running, and, for names without a process id (older versions), those
    older than :data:`LEFTOVER_SECONDS`. Returns the paths removed."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        leftover = os.path.join(folder, name)
        pid = name[len(prefix) : -len(".tmp")].split("-")[0]
        try:
            if pid.isdigit():
                stale = int(pid) != os.getpid() and not _running(int(pid))
            else:
                stale = os.path.getmtime(leftover) < time.time() - LEFTOVER_SECONDS
            if stale:
                os.remove(leftover)
                removed.append(leftover)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    if removed:
        getLogger().info(f"Removed {len(removed)} leftover temporary file(s) of '{path}'")
    return removed


def atomic_write(path, write, binary=False):
    """Call ``write(file_object)`` on a temporary file (text, or bytes with ``binary``), then
    rename it to ``path``; first removes what interrupted writes of ``path`` left
    (:func:`remove_leftovers`).

    The file gets the permissions of a plainly created one (the umask's, not mkstemp's 0600).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}-", suffix=".tmp"
    )
    try:
        with (
            os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        ) as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_copy(source, target):
    """Copy a file so that ``target`` never exists half-written."""
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(target)}.{os.getpid()}-", suffix=".tmp"
    )
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
