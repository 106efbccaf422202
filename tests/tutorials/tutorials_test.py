"""Every tutorial runs at smoke size, and its notebook is in sync with its jupytext source."""

import glob
import os
import subprocess
import sys

import jupytext
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "*.py")))


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=os.path.basename)
def test_notebook_matches_source(path):
    source = jupytext.read(path)
    notebook = jupytext.read(path[:-3] + ".ipynb")
    assert [c.source for c in source.cells] == [c.source for c in notebook.cells]


@pytest.mark.parametrize("path", TUTORIALS, ids=os.path.basename)
def test_tutorial_runs_at_smoke_size(path, tmp_path):
    env = {**os.environ, "MLCMK_TUTORIAL_SMOKE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "MPLBACKEND": "Agg", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
