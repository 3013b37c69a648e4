"""Atomic writes: a writer killed at any moment (SIGKILL, a power cut)
leaves the old complete file or the new complete one, never a partial one.

One mechanism for every file a later run reads back: the model directory
(``resnet_tf.model_dir``, ``detection.model_dir``, ``localization.model_dir``),
the checkpoints and the step-level backups (``resnet_tf.callbacks``).

How: the new content is written under a temporary name in the target's own
folder (so the rename never crosses a file system), flushed to disk
(``fsync``), renamed over the target with ``os.replace`` (atomic on POSIX and
Windows), and the folder is flushed so the rename itself survives a power
cut. Temporaries are named ``.tmp-PID-TOKEN-NAME``: the leading dot hides
them (TF Serving, for one, skips them when it scans for versions), and they
end with the target's name, so Keras's suffix checks (``.keras``,
``.weights.h5``) pass on them.

Leftovers: a killed writer leaves its temporary behind; it is never read
(only complete files are renamed into place). The next write of the same
target removes the temporaries of that target whose writing process is gone,
and ``remove_stale_temporaries(folder)`` (called by the checkpoint and
backup callbacks when training starts) removes every such temporary in a
folder. A temporary of a process that is still running is left alone: it may
be writing now.
"""

import contextlib
import json
import os
import re
import secrets
import shutil

TMP_PREFIX = ".tmp-"
# ".tmp-PID-..." (this module and the checkpoints of older versions) and
# ".tmpPID-..." (model directories of older versions).
_TMP_NAME = re.compile(r"^\.tmp-?(\d+)-")


def atomic_write(path, write):
    """Write ``path`` atomically with ``write(tmp_path)``.

    Args:
        path: the file to (re)write; its folder is created if needed.
        write: a callable that writes the complete new content to the path
            it is given (e.g. ``lambda p: model.save(p)``); it must not keep
            the file open after it returns.
    Returns:
        ``path``.
    Raises:
        whatever ``write`` raises; the target is then unchanged and the
        temporary removed.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder, name)
    tmp = _temporary(folder, name)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    _fsync_folder(folder)
    return path


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically; returns ``path``."""
    def write(p):
        with open(p, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def write_text(path, text):
    """Write ``text`` (str, UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=None):
    """Write ``obj`` as JSON (one trailing newline) to ``path`` atomically;
    returns ``path``. Raises TypeError for objects JSON can't hold, before
    anything is written."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(path):
    """Create the directory ``path`` atomically: yields a temporary folder
    beside it to fill; when the block ends without an error the folder's
    files are flushed and it is renamed to ``path``. On an error it is
    deleted and ``path`` is untouched.

    For directories that are written once (a SavedModel version): ``path``
    must not exist yet, or be an empty folder.

    Raises:
        FileExistsError naming ``path``: it exists and is not empty (before
        anything is written).
    """
    folder, name = os.path.split(os.path.abspath(path))
    if os.path.isdir(path) and os.listdir(path) or os.path.isfile(path):
        raise FileExistsError(f"{path} exists already; choose a new name or remove it.")
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder, name)
    tmp = _temporary(folder, name)
    os.makedirs(tmp)
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for f in files:
                _fsync_file(os.path.join(root, f))
            _fsync_folder(root)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    _fsync_folder(folder)


def remove_stale_temporaries(folder, name=None):
    """Delete the temporaries that killed writers left in ``folder`` (all of
    them, or only those of the target file ``name``). Temporaries of
    processes still running on this machine are left alone. Returns the
    number removed."""
    try:
        entries = os.listdir(folder)
    except OSError:  # no such folder: nothing to clean
        return 0
    removed = 0
    for entry in entries:
        match = _TMP_NAME.match(entry)
        if not match or (name is not None and not entry.endswith(f"-{name}")):
            continue
        if _alive(int(match.group(1))):
            continue
        full = os.path.join(folder, entry)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
            removed += 1
        except OSError:  # removed by someone else meanwhile
            pass
    return removed


def _temporary(folder, name):
    return os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def _alive(pid):
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process
        return True
    return True


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. folders can't be opened on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
