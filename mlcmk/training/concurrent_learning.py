r"""Concurrent learning: the exploration -> examination -> labelling -> training loop (EELT).

Training data are collected on the fly: an explorer proposes configurations with the current
model, an examiner scores each by an a posteriori error indicator (the spread of an ensemble),
configurations whose indicator lies between the trust levels `lo <= dev < hi` are labelled by
the expensive model, and the trainer refits on all labels. The four parts are pluggable objects
with one method each (below); `ConcurrentLearner` runs the loop and keeps its state on disk.

On-disk state of a run directory (every file written atomically: temporary file + os.replace):

    run.json                    settings of the run
    labels/<key>.npz            one label per configuration, keyed by a content hash
    labels/<key>.failed.json    a labelling failure (not retried)
    iteration_0003/explored.npz     explored configurations           (stage 1 marker)
    iteration_0003/examined.npz     deviations, classes, selection    (stage 2 marker)
    iteration_0003/labelled.json    keys labelled / failed            (stage 3 marker)
    iteration_0003/model/           the trainer's saved state
    iteration_0003/trained.json     training metrics                  (stage 4 marker)
    iteration_0003/report.json      the iteration's report            (done marker)
    log.json                        list of all reports

A run killed at any point resumes from the first stage without a marker: explored and selected
configurations are re-read, labels already in `labels/` are not requested again (so nothing is
labelled twice and no label is lost), and the model is re-read from the last trained iteration.
Given deterministic parts (seeded by iteration), the resumed run ends in the same state as an
uninterrupted one.

Reference: L. Zhang, D.-Y. Lin, H. Wang, R. Car, W. E, "Active learning of uniformly accurate
interatomic potentials for materials simulation", Phys. Rev. Materials 3, 023804 (2019); W. E,
J. Han, L. Zhang, "Machine-learning-assisted modeling", Physics Today 74 (2021).
"""

import abc
import hashlib
import json
import os
import time
from collections import namedtuple

import numpy as np

from mlcmk._validation import check_number, check_positive_int
from mlcmk.io import atomic_directory, atomic_file, write_json
from mlcmk.models.ensemble import ACCURATE, CANDIDATE, FAILED, as_trust_levels

STAGES = ("explored", "examined", "labelled", "trained", "done")

LabelledData = namedtuple("LabelledData", ["configurations", "labels", "keys"])
LabelledData.__doc__ = """All successful labels so far, ordered by key (deterministic).

configurations: array `(n, ...)`; labels: dict of arrays `(n, ...)`; keys: list of str."""


# ---------------------------------------------------------------------------- the four parts
class Explorer(abc.ABC):
    """Proposes configurations with the current model."""

    @abc.abstractmethod
    def explore(self, iteration, seed):
        """Returns configurations, an array `(n, ...)`, for `iteration` (int >= 1).

        Must be a function of `(iteration, seed)` and the current model only (seed any RNG from
        them), so that a resumed run explores the same configurations.
        """


class Examiner(abc.ABC):
    """Scores configurations by an a posteriori error indicator."""

    @abc.abstractmethod
    def examine(self, configurations):
        """Returns the model deviation `(n,)` of each configuration (NaN/inf count as failed)."""


class Labeller:
    """Labels configurations with the expensive reference model.

    Implement `label` (one configuration) or, for vectorised labellers, `label_batch` and set
    `batch_size`. An exception raised for one configuration (subclass of `Exception`) is recorded
    as a failure of that configuration and the loop goes on; a `BaseException` that is not an
    `Exception` (KeyboardInterrupt, SystemExit, a kill) stops the run, which can be resumed.
    """

    batch_size = 1

    def label(self, configuration):
        """Returns a dict of NumPy arrays, the label of one configuration."""
        raise NotImplementedError(f"{type(self).__name__} implements neither label nor "
                                  "label_batch")

    def label_batch(self, configurations):
        """Returns one entry per configuration: a label dict, or the `Exception` it raised."""
        results = []
        for configuration in configurations:
            try:
                results.append(self.label(configuration))
            except Exception as err:  # noqa: BLE001 - recorded as this configuration's failure
                results.append(err)
        return results


class Trainer(abc.ABC):
    """Fits the model(s) to all labels; saves and restores its state."""

    @abc.abstractmethod
    def train(self, data, iteration):
        """Trains on `data` (a `LabelledData`); returns a dict of float metrics."""

    @abc.abstractmethod
    def save(self, directory):
        """Writes the model state into the (new, empty) `directory`."""

    @abc.abstractmethod
    def load(self, directory):
        """Restores the state written by `save`."""


class EnsembleTrainer(Trainer):
    """Trains every member of an `Ensemble` on `(configurations, labels[target])`.

    Each call continues from the current weights with a freshly reset optimizer (so that a
    resumed run, which restores weights only, trains exactly as an uninterrupted one), on
    batches of `batch_size` drawn by a seeded shuffle, for `steps` optimizer steps per member.

    Args:
        ensemble: an `Ensemble` whose members are compiled Keras models, or are compiled here
            with `optimizer_fn()`.
        target: key of the label to fit (e.g. "mean_force", "forces").
        steps: optimizer steps per member and iteration (an int, or a callable
            `iteration -> int`).
        batch_size: batch size (batches are always full, so shapes never change).
        weight_key: optional label key of per-sample errors; the weight is 1 / error^2,
            normalised to mean 1.
        optimizer_fn: zero-argument callable returning a new optimizer (default Adam 1e-3).
        seed: int.
    """

    def __init__(self, ensemble, target, steps=500, batch_size=64, weight_key=None,
                 optimizer_fn=None, seed=0):
        self.ensemble = ensemble
        self.target = target
        self.steps = steps
        self.batch_size = int(batch_size)
        self.weight_key = weight_key
        self.optimizer_fn = optimizer_fn
        self.seed = int(seed)

    def _steps(self, iteration):
        return int(self.steps(iteration) if callable(self.steps) else self.steps)

    def train(self, data, iteration):
        import keras
        import tensorflow as tf

        x = np.asarray(data.configurations, dtype=keras.config.floatx())
        if self.target not in data.labels:
            raise ValueError(f"Labels have no key {self.target!r}; keys: {sorted(data.labels)}")
        y = np.asarray(data.labels[self.target], dtype=keras.config.floatx())
        arrays = (x, y)
        if self.weight_key is not None:
            error = np.asarray(data.labels[self.weight_key], dtype=np.float64)
            error = np.sqrt(np.mean(error.reshape(len(x), -1) ** 2, axis=1))
            weight = 1.0 / np.maximum(error, 1e-3 * np.median(error)) ** 2
            arrays = (x, y, (weight / weight.mean()).astype(keras.config.floatx()))
        losses = []
        for k, member in enumerate(self.ensemble.members):
            if getattr(member, "optimizer", None) is None:
                optimizer = (self.optimizer_fn() if self.optimizer_fn
                             else keras.optimizers.Adam(1e-3))
                member.compile(optimizer=optimizer)
            # A fresh optimizer state (step count and moments; the learning rate is kept).
            for variable in member.optimizer.variables:
                if variable.name != "learning_rate":
                    variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
            shuffle_seed = (self.seed * 1_000_003 + iteration * 1009 + k) % (2**31)
            dataset = (tf.data.Dataset.from_tensor_slices(arrays)
                       .repeat().shuffle(max(len(x), 1), seed=shuffle_seed)
                       .batch(self.batch_size, drop_remainder=True))
            history = member.fit(dataset, epochs=1, steps_per_epoch=self._steps(iteration),
                                 shuffle=False, verbose=0)
            losses.append(float(history.history["loss"][-1]))
        return {"train_loss": float(np.mean(losses))}

    def save(self, directory):
        self.ensemble.save_weights(directory)

    def load(self, directory):
        self.ensemble.load_weights(directory)


# ---------------------------------------------------------------------------- selection
def random_selector(configurations, num, rng):
    """Indices of `num` configurations drawn without replacement."""
    n = len(configurations)
    return np.sort(rng.choice(n, size=min(num, n), replace=False))


def farthest_point_selector(configurations, num, rng):
    """Indices of `num` configurations spread out by greedy farthest-point sampling."""
    x = np.asarray(configurations, dtype=np.float64).reshape(len(configurations), -1)
    n = len(x)
    if num >= n:
        return np.arange(n)
    chosen = [int(rng.integers(n))]
    distance = np.sum((x - x[chosen[0]]) ** 2, axis=1)
    for _ in range(num - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.sum((x - x[nxt]) ** 2, axis=1))
    return np.sort(np.array(chosen))


# ---------------------------------------------------------------------------- label store
def configuration_key(configuration):
    """Content hash (hex) of a configuration: its float64 bytes and shape."""
    array = np.ascontiguousarray(np.asarray(configuration, dtype=np.float64))
    digest = hashlib.sha256(str(array.shape).encode() + array.tobytes())
    return digest.hexdigest()[:32]


def _atomic_savez(path, **arrays):
    with atomic_file(path, binary=True) as f:
        np.savez(f, **arrays)


class LabelStore:
    """Labels on disk, one file per configuration key; failures recorded beside them."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def _path(self, key, failed=False):
        return os.path.join(self.directory, key + (".failed.json" if failed else ".npz"))

    def has(self, key):
        return os.path.exists(self._path(key)) or os.path.exists(self._path(key, failed=True))

    def status(self, key):
        if os.path.exists(self._path(key)):
            return "labelled"
        if os.path.exists(self._path(key, failed=True)):
            return "failed"
        return None

    def put(self, key, configuration, label):
        arrays = {f"label_{k}": np.asarray(v) for k, v in label.items()}
        _atomic_savez(self._path(key), configuration=np.asarray(configuration), **arrays)

    def put_failure(self, key, configuration, error):
        write_json(self._path(key, failed=True),
                   {"configuration": np.asarray(configuration, dtype=np.float64).tolist(),
                    "error": f"{type(error).__name__}: {error}"})

    def failures(self):
        out = {}
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".failed.json"):
                with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                    out[name[:-len(".failed.json")]] = json.load(f)
        return out

    def keys(self):
        return sorted(n[:-4] for n in os.listdir(self.directory)
                      if n.endswith(".npz") and not n.startswith("."))

    def data(self):
        """All labels as a `LabelledData`, ordered by key."""
        keys = self.keys()
        configurations, labels = [], {}
        for key in keys:
            with np.load(self._path(key)) as f:
                configurations.append(f["configuration"])
                for name in f.files:
                    if name.startswith("label_"):
                        labels.setdefault(name[6:], []).append(f[name])
        if not keys:
            return LabelledData(np.zeros((0,)), {}, [])
        return LabelledData(np.stack(configurations),
                            {k: np.stack(v) for k, v in labels.items()}, keys)


def _check_label(label):
    if not isinstance(label, dict) or not label:
        raise TypeError(f"a label must be a non-empty dict of arrays; received {label!r}")
    for name, value in label.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise FloatingPointError(f"label {name!r} is not finite")


# ---------------------------------------------------------------------------- the loop
class ConcurrentLearner:
    """Runs explore -> examine -> label -> train until converged or `max_iterations`.

    Iteration 0 labels `initial_configurations` (if any) and trains on them; each later
    iteration explores with the current model, examines every explored configuration, sorts them
    by `trust_levels` into accurate / candidate / failed, labels up to
    `max_labels_per_iteration` candidates not labelled before (chosen by `selector`), and
    retrains on all labels. The run stops after an iteration whose explored configurations are
    at least `converge_fraction` accurate, or after iteration `max_iterations`.

    Each iteration's report (explored, accurate, candidate, failed, selected, labelled,
    label_failures, accurate_fraction, train metrics, `evaluator` metrics, wall times) is printed
    and appended to `log.json` in `directory`.

    Args:
        explorer, examiner, labeller, trainer: the four parts (see `Explorer`, `Examiner`,
            `Labeller`, `Trainer`).
        directory: run directory; an existing run there is resumed.
        trust_levels: a `TrustLevels` or a `(lo, hi)` pair.
        max_iterations: last iteration (int >= 1).
        max_labels_per_iteration: cap on labels per iteration.
        converge_fraction: stop when at least this fraction of explored configurations is
            accurate (None: never).
        min_iterations: the convergence rule applies from this iteration on. After the first
            few labels the ensemble spread is often falsely small (members fitted to the same
            handful of points agree everywhere), so a run should not stop at iteration 1.
        initial_configurations: optional array labelled in iteration 0.
        selector: callable `(candidates, num, rng) -> indices`; default `random_selector`.
        evaluator: optional callable `iteration -> dict` of float metrics (e.g. the error on a
            fixed test set), called after training.
        seed: int, seeds exploration and selection (combined with the iteration).
        verbose: 0 silent, 1 one line per iteration.
    """

    def __init__(self, explorer, examiner, labeller, trainer, directory, trust_levels,
                 max_iterations=10, max_labels_per_iteration=30, converge_fraction=0.9,
                 min_iterations=1, initial_configurations=None, selector=None, evaluator=None,
                 seed=0, verbose=1):
        for name, part, cls in (("explorer", explorer, Explorer), ("examiner", examiner,
                                Examiner), ("labeller", labeller, Labeller),
                                ("trainer", trainer, Trainer)):
            if not isinstance(part, cls):
                raise TypeError(f"`{name}` must be a {cls.__name__}; received "
                                f"{type(part).__name__}")
        trust_levels = as_trust_levels(trust_levels)
        max_iterations = check_positive_int("max_iterations", max_iterations)
        min_iterations = check_positive_int("min_iterations", min_iterations)
        max_labels_per_iteration = check_positive_int("max_labels_per_iteration",
                                                      max_labels_per_iteration)
        if converge_fraction is not None:  # None: run all `max_iterations`
            converge_fraction = check_number("converge_fraction", converge_fraction, 0,
                                             strict=True, high=1)
        self.explorer = explorer
        self.examiner = examiner
        self.labeller = labeller
        self.trainer = trainer
        self.directory = directory
        self.trust_levels = trust_levels
        self.max_iterations = int(max_iterations)
        self.max_labels_per_iteration = int(max_labels_per_iteration)
        self.converge_fraction = converge_fraction
        self.min_iterations = int(min_iterations)
        self.initial_configurations = (None if initial_configurations is None
                                       else np.asarray(initial_configurations))
        self.selector = selector or random_selector
        self.evaluator = evaluator
        self.seed = int(seed)
        self.verbose = verbose
        self.store = LabelStore(os.path.join(directory, "labels"))
        self._model_iteration = -1  # iteration whose trained model the trainer holds

    # ------------------------------------------------------------------ paths
    def iteration_dir(self, iteration):
        return os.path.join(self.directory, f"iteration_{iteration:04d}")

    def _marker(self, iteration, stage):
        names = {"explored": "explored.npz", "examined": "examined.npz",
                 "labelled": "labelled.json", "trained": "trained.json", "done": "report.json"}
        return os.path.join(self.iteration_dir(iteration), names[stage])

    def stage_done(self, iteration, stage):
        """Whether `stage` (one of STAGES) of `iteration` is complete on disk."""
        return os.path.exists(self._marker(iteration, stage))

    def log(self):
        """The list of iteration reports on disk."""
        path = os.path.join(self.directory, "log.json")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _rng(self, iteration, stream):
        return np.random.default_rng([self.seed, iteration, stream])

    def _ensure_model(self, iteration):
        """Makes the trainer hold the model trained in `iteration` (-1: the initial one)."""
        if self._model_iteration == iteration:
            return
        if iteration < 0:
            if self._model_iteration is None:
                raise RuntimeError("The initial model was changed by a failed training and "
                                   "cannot be restored; rebuild the trainer and run again")
            return
        self.trainer.load(os.path.join(self.iteration_dir(iteration), "model"))
        self._model_iteration = iteration

    # ------------------------------------------------------------------ stages
    def _explore(self, k):
        path = self._marker(k, "explored")
        if os.path.exists(path):
            with np.load(path) as f:
                return f["configurations"]
        self._ensure_model(k - 1)
        if k == 0:
            configurations = self.initial_configurations
        else:
            configurations = np.asarray(self.explorer.explore(k, self.seed))
        if configurations.ndim < 1 or len(configurations) == 0:
            raise ValueError(f"The explorer returned no configurations at iteration {k}")
        _atomic_savez(path, configurations=configurations)
        return configurations

    def _examine(self, k, configurations):
        path = self._marker(k, "examined")
        if os.path.exists(path):
            with np.load(path) as f:
                return f["deviation"], f["classes"], f["selected"]
        self._ensure_model(k - 1)
        n = len(configurations)
        if k == 0:
            deviation = np.full(n, np.nan)
            classes = np.full(n, CANDIDATE)
        else:
            deviation = np.asarray(self.examiner.examine(configurations), dtype=np.float64)
            if deviation.shape != (n,):
                raise ValueError(f"The examiner returned shape {deviation.shape} for {n} "
                                 "configurations; expected (n,)")
            classes = self.trust_levels.classify(deviation)
        # Candidates not labelled (or failed) before, duplicates removed; then the selector.
        seen, pool = set(), []
        for i in np.flatnonzero(classes == CANDIDATE):
            key = configuration_key(configurations[i])
            if key not in seen and not self.store.has(key):
                seen.add(key)
                pool.append(i)
        pool = np.asarray(pool, dtype=np.int64)
        if k == 0:
            selected = pool
        elif len(pool):
            chosen = self.selector(configurations[pool], self.max_labels_per_iteration,
                                   self._rng(k, 1))
            selected = pool[np.asarray(chosen, dtype=np.int64)]
        else:
            selected = pool
        _atomic_savez(path, deviation=deviation, classes=classes, selected=selected)
        return deviation, classes, selected

    def _label(self, k, configurations, selected):
        path = self._marker(k, "labelled")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        keys = [configuration_key(configurations[i]) for i in selected]
        todo = [(i, key) for i, key in zip(selected, keys, strict=True)
                if not self.store.has(key)]
        size = max(int(getattr(self.labeller, "batch_size", 1)), 1)
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            results = self.labeller.label_batch([configurations[i] for i, _ in chunk])
            if len(results) != len(chunk):
                raise ValueError(f"label_batch returned {len(results)} results for "
                                 f"{len(chunk)} configurations")
            for (i, key), result in zip(chunk, results, strict=True):
                if not isinstance(result, Exception):
                    try:
                        _check_label(result)
                    except (TypeError, FloatingPointError) as err:
                        result = err
                if isinstance(result, Exception):
                    self.store.put_failure(key, configurations[i], result)
                    if self.verbose:
                        print(f"  iteration {k}: labelling failed for configuration {key[:8]} "
                              f"({type(result).__name__}: {result}); skipped")
                else:
                    self.store.put(key, configurations[i], result)
        status = {key: self.store.status(key) for key in keys}
        summary = {"labelled": sorted(k_ for k_, s in status.items() if s == "labelled"),
                   "failed": sorted(k_ for k_, s in status.items() if s == "failed")}
        write_json(path, summary)
        return summary

    def _train(self, k):
        path = self._marker(k, "trained")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        self._ensure_model(k - 1)
        data = self.store.data()
        # Training changes the trainer's model in place; until it is saved, the model in
        # memory belongs to no iteration (a failure here forces a reload).
        self._model_iteration = None
        if not data.keys:
            raise RuntimeError(f"No labels to train on at iteration {k} (all labelling failed "
                               "or nothing was selected); give initial_configurations")
        metrics = dict(self.trainer.train(data, k))
        metrics["num_labels"] = len(data.keys)
        with atomic_directory(os.path.join(self.iteration_dir(k), "model")) as tmp:
            self.trainer.save(tmp)
        self._model_iteration = k
        write_json(path, metrics)
        return metrics

    # ------------------------------------------------------------------ run
    def run(self):
        """Runs (or resumes) the loop; returns the list of iteration reports."""
        os.makedirs(self.directory, exist_ok=True)
        settings = {"trust_levels": self.trust_levels.get_config(),
                    "max_labels_per_iteration": self.max_labels_per_iteration,
                    "converge_fraction": self.converge_fraction,
                    "min_iterations": self.min_iterations, "seed": self.seed}
        settings_path = os.path.join(self.directory, "run.json")
        if os.path.exists(settings_path):
            with open(settings_path, encoding="utf-8") as f:
                previous = json.load(f)
            if previous != json.loads(json.dumps(settings)):
                raise ValueError(f"{self.directory!r} holds a run with other settings "
                                 f"{previous}; use a new directory")
        else:
            write_json(settings_path, settings)
        reports = []
        first = 0 if self.initial_configurations is not None else 1
        for k in range(first, self.max_iterations + 1):
            if self.stage_done(k, "done"):
                with open(self._marker(k, "done"), encoding="utf-8") as f:
                    report = json.load(f)
            else:
                report = self._run_iteration(k)
            reports.append(report)
            if report["converged"]:
                break
        if reports:
            self._ensure_model(reports[-1]["iteration"])
        return reports

    def _run_iteration(self, k):
        os.makedirs(self.iteration_dir(k), exist_ok=True)
        times = {}
        t = time.perf_counter()
        configurations = self._explore(k)
        times["explore_s"] = time.perf_counter() - t
        t = time.perf_counter()
        deviation, classes, selected = self._examine(k, configurations)
        times["examine_s"] = time.perf_counter() - t
        t = time.perf_counter()
        labelled = self._label(k, configurations, selected)
        times["label_s"] = time.perf_counter() - t
        t = time.perf_counter()
        train_metrics = self._train(k)
        times["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._ensure_model(k)
        evaluation = dict(self.evaluator(k)) if self.evaluator is not None else {}
        times["evaluate_s"] = time.perf_counter() - t
        n = len(configurations)
        accurate = int(np.sum(classes == ACCURATE))
        fraction = accurate / n if k > 0 else 0.0
        report = {
            "iteration": k, "explored": n, "accurate": accurate,
            "candidate": int(np.sum(classes == CANDIDATE)),
            "failed": int(np.sum(classes == FAILED)),
            "selected": int(len(selected)), "labelled": len(labelled["labelled"]),
            "label_failures": len(labelled["failed"]),
            "total_labels": int(train_metrics["num_labels"]),
            "accurate_fraction": fraction,
            "mean_deviation": float(np.nanmean(deviation)) if k > 0 else None,
            "train": {k_: v for k_, v in train_metrics.items() if k_ != "num_labels"},
            "evaluation": evaluation, "times": times,
        }
        report["converged"] = bool(k >= self.min_iterations
                                   and self.converge_fraction is not None
                                   and fraction >= self.converge_fraction)
        write_json(self._marker(k, "done"), report)
        log = [r for r in self.log() if r["iteration"] < k] + [report]
        write_json(os.path.join(self.directory, "log.json"), log)
        if self.verbose:
            print(format_report(report), flush=True)
        return report


def format_report(r):
    """One line of the per-iteration table."""
    evaluation = "  ".join(f"{k} {v:.4g}" for k, v in r["evaluation"].items()
                           if isinstance(v, (int, float)))
    return (f"iter {r['iteration']:3d}  explored {r['explored']:6d}  accurate "
            f"{r['accurate']:6d} ({100 * r['accurate_fraction']:5.1f}%)  candidate "
            f"{r['candidate']:6d}  failed {r['failed']:5d}  labelled {r['labelled']:4d}  "
            f"label failures {r['label_failures']:3d}  labels {r['total_labels']:5d}  "
            f"{evaluation}")
