"""Runs a benchmark script in a subprocess, for the toy-size smoke tests beside this file."""

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
