"""`atomic_file` and `atomic_directory`: renamed into place on success, nothing left behind
on failure, and the permissions a plain `open` / `mkdir` would give."""

import os
import stat

import numpy as np
import pytest

from mlcmk.io import atomic_directory, atomic_file, temporary_sibling, write_json


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


def test_atomic_directory_replaces_the_previous_folder_whole(tmp_path):
    path = tmp_path / "parent" / "model"
    with atomic_directory(str(path)) as tmp:
        assert os.path.dirname(tmp) == str(path.parent) and os.listdir(tmp) == []
        (path.parent / os.path.basename(tmp) / "a.txt").write_text("first")
    assert os.listdir(path) == ["a.txt"]
    with atomic_directory(str(path)) as tmp:
        with open(os.path.join(tmp, "b.txt"), "w") as f:
            f.write("second")
        assert (path / "a.txt").read_text() == "first"  # untouched until the block ends
    assert os.listdir(path) == ["b.txt"]  # nothing of the previous folder is kept
    assert os.listdir(path.parent) == ["model"]  # no temporary or old folder left


def test_atomic_directory_failure_keeps_the_previous_folder(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "a.txt").write_text("first")
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_directory(str(path)) as tmp:
            with open(os.path.join(tmp, "a.txt"), "w") as f:
                f.write("half")
            raise RuntimeError("stop")
    assert (path / "a.txt").read_text() == "first"
    assert os.listdir(tmp_path) == ["model"]


def test_atomic_directory_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(str(tmp_path / "new")):
            pass
        os.mkdir(tmp_path / "plain")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "new").st_mode)
    assert mode == 0o750 == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_atomic_directory_refuses_to_replace_a_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="results.json.*not a folder"):
        with atomic_directory(str(path)):
            pass
    assert path.read_text() == "{}" and os.listdir(tmp_path) == ["results.json"]


def test_temporary_sibling_is_a_fresh_name_beside_the_path(tmp_path):
    path = tmp_path / "ckpt" / "latest.weights.h5"
    first, second = temporary_sibling(path), temporary_sibling(str(path))
    assert first != second
    for name in (first, second):
        assert os.path.dirname(name) == str(tmp_path / "ckpt")
        assert os.path.basename(name).startswith(".tmp-")
        assert name.endswith("-latest.weights.h5")  # Keras checks the suffix
    assert not os.path.exists(tmp_path / "ckpt")  # nothing created
