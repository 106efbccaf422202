"""Small file helpers shared by the training loops and the CLI."""

import contextlib
import json
import os
import shutil
import uuid


def temporary_sibling(path):
    """A fresh name `.tmp-<hex>-<name>` in the folder of `path` (nothing is created): the
    temporary that is renamed to `path` once written. Unlike `tempfile.mkstemp` or `mkdtemp`,
    what the caller then creates there gets the usual permissions (the umask's), and the name
    keeps the suffix of `path` (Keras checks `.weights.h5`)."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")


@contextlib.contextmanager
def atomic_file(path, binary=False):
    """Yields a new file in the folder of `path`, renamed to `path` when the block succeeds.

    A crash or an error while writing leaves the previous `path` intact and no temporary
    behind. The file gets the permissions `open` would give it (0o666 less the umask), not
    `tempfile.mkstemp`'s owner-only 0o600.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a new empty folder beside `path` that replaces `path` when the block succeeds.

    A folder at `path` is replaced whole: the caller decides beforehand whether that is
    allowed; a file at `path` is a `ValueError`, raised before anything is written. An error
    in the block leaves the previous `path` as it was and no temporary behind. The swap is
    two renames (POSIX has no atomic exchange of folders): a crash in the instant between
    them leaves the previous folder beside `path` as `.old-<hex>-<name>`, never a
    half-written `path`. The folder gets `mkdir`'s permissions (0o777 less the umask).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{path!r} exists and is not a folder; refusing to replace it")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = temporary_sibling(path)
    os.mkdir(tmp)
    try:
        yield tmp
        if os.path.lexists(path):
            old = os.path.join(parent, f".old-{uuid.uuid4().hex}-{name}")
            os.rename(path, old)
            os.rename(tmp, path)
            if os.path.islink(old):
                os.remove(old)  # the link, not the folder it points to
            else:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically (`atomic_file`).

    NumPy scalars are written as floats. A crash while writing leaves the previous file intact.
    """
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
