"""Kinetic training data: BGK runs from random smooth and Sod-type initial data, cached on disk.

Nothing is downloaded: the data are made by `BGK1D` and stored as `.npz` under the cache
directory (`~/.cache/mlcmk/kinetic` by default; `MLCMK_CACHE_DIR` or `cache_dir` override),
one file per configuration, regenerated only when missing.
"""

import hashlib
import json
import math
import os

import numpy as np

from mlcmk._validation import check_number, check_positive_int
from mlcmk.io import atomic_file
from mlcmk.problems.kinetic.bgk import BGK1D


def default_cache_dir():
    """`$MLCMK_CACHE_DIR/kinetic` if set, else `~/.cache/mlcmk/kinetic`."""
    root = os.environ.get("MLCMK_CACHE_DIR")
    if root:
        return os.path.join(root, "kinetic")
    return os.path.join(os.path.expanduser("~"), ".cache", "mlcmk", "kinetic")


def sample_eps(rng, size, eps_range=(1e-3, 10.0)):
    """Knudsen numbers log-uniform in `eps_range`."""
    lo, hi = eps_range
    if not (0 < lo <= hi):
        raise ValueError(f"`eps_range` must satisfy 0 < low <= high; received {eps_range!r}")
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))


INITIAL_KINDS = ("smooth", "sod")


def initial_state(problem, rng, kind):
    """`(rho, u, T)` of a `"smooth"` (random Fourier) or `"sod"` (random Riemann) problem."""
    if kind == "smooth":
        return problem.random_smooth_initial(rng)
    if kind == "sod":
        return problem.random_sod_initial(rng)
    raise ValueError(f"`kind` must be one of {INITIAL_KINDS}; received kind={kind!r}")


def parse_cases(text):
    """`"smooth:1000,sod:1002"` -> `[("smooth", 1000), ("sod", 1002)]`: initial data kinds
    of `initial_state` with the seeds of their random states (the benchmarks' test cases)."""
    cases = []
    for item in str(text).split(","):
        kind, _, seed = item.strip().partition(":")
        if kind not in INITIAL_KINDS or not seed.strip().isdigit():
            raise ValueError(f"cases must be comma-separated kind:seed items with kind in "
                             f"{INITIAL_KINDS} and a non-negative int seed, e.g. "
                             f"'smooth:1000,sod:1002'; received {text!r}")
        cases.append((kind, int(seed)))
    return cases


def generate_kinetic_data(num_runs=16, seed=0, num_x=100, v_max=8.0, num_v=64, t_end=0.1,
                          num_snapshots=5, eps_range=(1e-3, 10.0), sod_fraction=0.25,
                          cache_dir=None, overwrite=False):
    """Runs the BGK solver from random initial data and returns (and caches) the snapshots.

    Run `k` draws its own generator from `(seed, k)`, its kind (`sod` with probability
    `sod_fraction`) and `eps` log-uniform in `eps_range`.

    Returns:
        dict of arrays: `f` `(runs, snapshots, num_x, num_v)` at times `times`, `f_next` one
        solver step `dt[k]` later (for time derivatives), `f0` `(runs, num_x, num_v)`, `eps`
        `(runs,)`, `dt` `(runs,)`, `times` `(snapshots,)`, `is_sod` `(runs,)`, `v`, `x`; and
        `path`, the cache file.
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_snapshots = check_positive_int("num_snapshots", num_snapshots)
    sod_fraction = check_number("sod_fraction", sod_fraction, 0, high=1)
    config = {"num_runs": num_runs, "seed": int(seed), "num_x": num_x, "v_max": float(v_max),
              "num_v": num_v, "t_end": float(t_end), "num_snapshots": num_snapshots,
              "eps_range": [float(e) for e in eps_range], "sod_fraction": float(sod_fraction),
              "version": 1}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    directory = cache_dir or default_cache_dir()
    path = os.path.join(directory, f"bgk_{key}.npz")
    if os.path.exists(path) and not overwrite:
        with np.load(path) as data:
            out = {k: data[k] for k in data.files}
        out["path"] = path
        return out
    problem = BGK1D(eps=1.0, num_x=num_x, v_max=v_max, num_v=num_v)
    f_all, next_all, f0_all, eps_all, dt_all, sod_all = [], [], [], [], [], []
    times = None
    for k in range(num_runs):
        rng = np.random.default_rng([int(seed), k])
        is_sod = bool(rng.uniform() < sod_fraction)
        eps = float(sample_eps(rng, None, eps_range))
        run = BGK1D(eps=eps, num_x=num_x, v_max=v_max, num_v=num_v)
        f0 = run.maxwellian(*initial_state(problem, rng, "sod" if is_sod else "smooth"))
        times, snaps, nexts, dt = run.solve(f0, t_end, num_snapshots=num_snapshots,
                                            return_next=True)
        f_all.append(snaps)
        next_all.append(nexts)
        f0_all.append(f0)
        eps_all.append(eps)
        dt_all.append(dt)
        sod_all.append(is_sod)
    out = {"f": np.stack(f_all), "f_next": np.stack(next_all), "f0": np.stack(f0_all),
           "eps": np.array(eps_all), "dt": np.array(dt_all), "times": np.asarray(times),
           "is_sod": np.array(sod_all), "v": problem.grid.v, "x": problem.x}
    with atomic_file(path, binary=True) as f:
        np.savez(f, **out)
    out["path"] = path
    return out


_PER_RUN = ("f", "f_next", "f0", "eps", "dt", "is_sod")
_SHARED = ("times", "v", "x")


def _check_kinetic_arrays(name, data):
    """ValueError unless `data` holds every array of `generate_kinetic_data`'s result."""
    missing = [key for key in _PER_RUN + _SHARED if key not in data]
    if missing:
        raise ValueError(f"`{name}` is not kinetic data (generate_kinetic_data): it has no "
                         f"{', '.join(missing)}")


def merge_kinetic_data(datasets):
    """One data set of the runs of several `generate_kinetic_data` results, in order.

    Run k of a data set depends on `(seed, k)` only, so the runs of another seed are new runs
    drawn the same way, as more runs of the same seed would be; merging adds them without
    regenerating the cached ones, and keeps a seed (the benchmark's 1) out of a fit. The data
    sets must share their grids and snapshot times (`v`, `x`, `times`); their `dt` per run may
    differ. `path` becomes the list of the cache files.

    Raises:
        ValueError: for no data sets, a missing array, or grids or times that differ.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("`datasets` must hold at least one kinetic data set; received none")
    for k, data in enumerate(datasets):
        _check_kinetic_arrays(f"datasets[{k}]", data)
        for name in _SHARED:
            first, here = np.asarray(datasets[0][name]), np.asarray(data[name])
            if first.shape != here.shape or not np.array_equal(first, here):
                raise ValueError(f"`datasets[{k}]` has a different `{name}` from `datasets[0]` "
                                 f"(shape {here.shape} against {first.shape}): only data on "
                                 f"the same grids and snapshot times can be merged")
    out = {name: np.concatenate([np.asarray(d[name]) for d in datasets]) for name in _PER_RUN}
    out.update({name: np.asarray(datasets[0][name]) for name in _SHARED})
    paths = [d.get("path") for d in datasets]
    out["path"] = [p for p in paths if p is not None]
    return out


def select_kinetic_runs(data, runs):
    """The kinetic data of some of the runs of `data` (`generate_kinetic_data`).

    `runs` is a boolean mask over the runs (for example `data["eps"] >= 0.1`; the runs keep
    their order) or their indices (in the order given); the per-run arrays are indexed, the
    grids and snapshot times shared. A fit to
    the selection sees only those runs (a posteriori fits of the runs a goal misses,
    benchmarks/README.md).

    Raises:
        ValueError: for data that are not kinetic data, a mask of the wrong length, an index
            out of range or repeated, or a selection with no run.
    """
    _check_kinetic_arrays("data", data)
    num_runs = len(data["eps"])
    runs = np.asarray(runs)
    if runs.dtype == bool:
        if runs.shape != (num_runs,):
            raise ValueError(f"`runs`, a boolean mask, must have one entry per run, shape "
                             f"({num_runs},); received shape {runs.shape}")
        runs = np.flatnonzero(runs)
    elif runs.ndim != 1 or (runs.size and not np.issubdtype(runs.dtype, np.integer)):
        raise ValueError(f"`runs` must be a boolean mask over the runs or a 1-D array of run "
                         f"indices; received dtype {runs.dtype}, shape {runs.shape}")
    runs = runs.astype(int)
    if runs.size and (runs.min() < -num_runs or runs.max() >= num_runs):
        raise ValueError(f"`runs` must index the {num_runs} runs of `data`; received indices "
                         f"from {runs.min()} to {runs.max()}")
    if len(np.unique(runs % max(num_runs, 1))) != len(runs):
        raise ValueError("`runs` must not repeat a run (a repeated run would weigh double in a "
                         "fit)")
    if not runs.size:
        raise ValueError(f"`runs` selects no run of the {num_runs} of `data`")
    out = {name: np.asarray(data[name])[runs] for name in _PER_RUN}
    out.update({name: np.asarray(data[name]) for name in _SHARED})
    if "path" in data:
        out["path"] = data["path"]
    return out
