"""`atomic_file`: renamed into place on success, nothing left behind on failure, and the
permissions a plain `open` would give."""

import os
import stat

import numpy as np
import pytest

from mlcmk.io import atomic_file, write_json


def test_atomic_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == 0o640 == stat.S_IMODE(os.stat(tmp_path / "plain.json").st_mode)


def test_atomic_file_binary_and_failure_keep_the_previous_file(tmp_path):
    path = tmp_path / "deep" / "arrays.npz"
    with atomic_file(str(path), binary=True) as f:
        np.savez(f, a=np.arange(3))
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_file(str(path), binary=True) as f:
            np.savez(f, a=np.arange(5))
            raise RuntimeError("stop")
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))
    assert os.listdir(path.parent) == ["arrays.npz"]
