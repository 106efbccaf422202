"""Small file helpers shared by the training loops and the CLI."""

import json
import os
import tempfile


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically: a temporary file in the same folder, renamed.

    NumPy scalars are written as floats. A crash while writing leaves the previous file intact.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=float)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
