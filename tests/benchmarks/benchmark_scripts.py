"""Runs a benchmark script in a subprocess, for the toy-size smoke tests beside this file."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def run_script(name, *args, cache):
    """Runs `benchmarks/<name>` with `args`, the data cache in `cache` and no display."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "MPLBACKEND": "Agg", "MLCMK_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, os.path.join(BENCHMARKS, name), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def load_result(result, path):
    """The JSON a finished `run_script` wrote to `path`, after checking that it exited 0
    (the failure shows the end of its output)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(path) as f:
        return json.load(f)
