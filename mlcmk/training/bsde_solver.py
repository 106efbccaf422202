"""Train a `DeepBSDE` on a problem and report what a user needs to trust the number.

`solve` is what `mlcmk bsde`, the benchmark and the tutorial run: it trains with `model.fit`,
times it, compares Y0 with the problem's reference, checks the learned Z against the exact one
where one is known, and writes a JSON result and a plot.
"""

import os
import time

import keras
import numpy as np

from mlcmk import config as mlcmk_config
from mlcmk._plotting import subplots
from mlcmk._validation import check_number, check_positive_int
from mlcmk.io import write_json
from mlcmk.models.deep_bsde import DeepBSDE
from mlcmk.problems.bsde.base import BSDEProblem, deserialize_problem
from mlcmk.training.callbacks import ResumableCheckpoint, StopOnNonFiniteLoss, Y0Monitor


class _Clock(keras.callbacks.Callback):
    """Wall time at the end of each epoch, from the start of `fit`."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.epoch_end = []
        self.epoch_steps = []
        self._t = self.start

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.epoch_end.append(now - self.start)
        self.epoch_steps.append(now - self._t)


def check_schedule(iterations, epochs):
    """Validates a training length; returns `epochs` (default: one per 100 iterations, <= 40)."""
    iterations = check_positive_int("iterations", iterations)
    if epochs is None:
        epochs = max(1, min(40, iterations // 100))
    epochs = check_positive_int("epochs", epochs)
    if epochs > iterations:
        raise ValueError(f"`epochs` must be an int in [1, iterations={iterations}]; "
                         f"received epochs={epochs!r}")
    if iterations % epochs:
        raise ValueError(f"`iterations`={iterations} must be a multiple of `epochs`={epochs}")
    return epochs


def learning_rate_schedule(learning_rate, iterations):
    """Piecewise constant: lr, lr/10 after 60% and lr/100 after 85% of the iterations."""
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [max(1, int(0.6 * iterations)), max(2, int(0.85 * iterations))],
        [learning_rate, learning_rate / 10, learning_rate / 100],
    )


def solve(problem, *, iterations=4000, epochs=None, batch_size=64, learning_rate=1e-3,
          z_network="gradient", hidden_units=None, activation=None, precision="float64",
          seed=0, validation_size=256, z_error_paths=64, checkpoint_dir=None, export_dir=None,
          output_dir=None, verbose=1, callbacks=(), extremes=None):
    """Trains `DeepBSDE` on `problem` and returns a result dict (also written as JSON).

    Args:
        problem: a `BSDEProblem`, a registered name or a spec dict.
        iterations: training steps in all.
        epochs: number of epochs the iterations are split into (validation, logging and
            checkpoints happen per epoch); default one per 100 iterations, at most 40.
        batch_size, z_network, hidden_units, activation, seed, validation_size, extremes: see
            `DeepBSDE`.
        learning_rate: initial Adam learning rate (decayed by 10 at 60% and 85%).
        precision: "float64" or "float32".
        z_error_paths: validation paths for the Z check (0 skips it).
        checkpoint_dir: resumable checkpoints (written atomically after every finite epoch).
        export_dir: SavedModel with endpoints `y0` (or `u0`) and `z(t, x)`.
        output_dir: where `result.json` and `training.png` go.
        verbose: Keras verbosity (1: progress bar).
        callbacks: further Keras callbacks.

    Returns:
        A dict with the keys `problem`, `dim`, `y0`, `reference`, `reference_stderr`,
        `relative_error`, `final_loss`, `trivial_loss`, `loss_ratio`, `z_relative_error`,
        `z_cosine` (worst step after the first; None without an exact Z), their per-step lists,
        `ms_per_iteration` (median over epochs after the first; `ms_per_iteration_min` the
        fastest epoch), `wall_time_s`, `time_to_0.2%_s`, `iterations`, `seed`, `history`, ...
    """
    epochs = check_schedule(iterations, epochs)
    learning_rate = check_number("learning_rate", learning_rate, 0, strict=True, high=1,
                                 strict_high=True)
    problem = deserialize_problem(problem)
    if not isinstance(problem, BSDEProblem):
        raise TypeError(f"`problem` must be a BSDEProblem; received {type(problem).__name__}")
    mlcmk_config.set_precision(precision)
    mlcmk_config.set_seed(seed)
    steps_per_epoch = iterations // epochs

    model = DeepBSDE(problem, z_network=z_network, hidden_units=hidden_units,
                     activation=activation, batch_size=batch_size,
                     validation_size=validation_size, seed=seed, extremes=extremes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(learning_rate,
                                                                         iterations)))
    reference = problem.reference_value()
    clock = _Clock()
    stopper = StopOnNonFiniteLoss()
    cbs = [clock, stopper]
    if reference is not None and not model.random_x0:
        cbs.append(Y0Monitor(reference))
    if checkpoint_dir:
        cbs.append(ResumableCheckpoint(checkpoint_dir))
    cbs.extend(callbacks)
    history = model.fit(epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=cbs,
                        verbose=verbose)
    wall = time.perf_counter() - clock.start
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    done_epochs = len(clock.epoch_steps)
    # The first epoch of this call pays for tracing and compiling; later ones are steady state.
    steady = clock.epoch_steps[1:] if done_epochs > 1 else clock.epoch_steps
    ms = 1000 * float(np.median(steady)) / steps_per_epoch if steady else float("nan")
    ms_min = 1000 * float(np.min(steady)) / steps_per_epoch if steady else float("nan")

    result = {
        "problem": problem.name, "problem_config": problem.get_config(), "dim": problem.dim,
        "z_network": z_network, "precision": precision, "batch_size": batch_size,
        "learning_rate": learning_rate, "iterations": iterations, "epochs": epochs,
        "seed": seed, "stopped_non_finite": stopper.stopped_at is not None,
        "trivial_loss": model.trivial_loss,
        "final_loss": float(model.evaluate(verbose=0)),
        "ms_per_iteration": ms, "ms_per_iteration_min": ms_min, "wall_time_s": wall,
        # Tracing and XLA compilation are paid in the first epoch.
        "first_epoch_s": clock.epoch_steps[0] if done_epochs else None,
        "epoch_times_s": clock.epoch_steps,
        "y0": None, "reference": None, "reference_stderr": None, "reference_source": None,
        "relative_error": None, "time_to_0.2%_s": None,
    }
    result["loss_ratio"] = result["final_loss"] / result["trivial_loss"]
    if not model.random_x0:
        result["y0"] = model.y0_value()
    if reference is not None and result["y0"] is not None:
        result.update(reference=float(reference), reference_stderr=reference.stderr,
                      reference_source=reference.source,
                      relative_error=abs(result["y0"] - reference) / abs(reference))
        errors = hist.get("y0_relative_error", [])
        # First epoch after which the error stays within 0.2%.
        for k in range(len(errors)):
            if all(e <= 2e-3 for e in errors[k:]):
                result["time_to_0.2%_s"] = clock.epoch_end[k]
                result["iterations_to_0.2%"] = (k + 1 - (epochs - done_epochs)) * steps_per_epoch
                break
    result["z_relative_error"] = result["z_cosine"] = None
    if z_error_paths:
        errors = model.z_errors(num_paths=min(z_error_paths, validation_size))
        if errors is not None:
            result.update(z_relative_error=max(errors["relative_l2"]),
                          z_cosine=min(errors["cosine"]),
                          z_relative_error_per_step=errors["relative_l2"],
                          z_cosine_per_step=errors["cosine"])
    result["history"] = hist
    result["steps_per_epoch"] = steps_per_epoch
    if export_dir:
        model.export_solution(export_dir)
        result["export_dir"] = os.path.abspath(export_dir)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        result["output_dir"] = os.path.abspath(output_dir)
        write_json(os.path.join(output_dir, "result.json"), result)
        plot_history(result, os.path.join(output_dir, "training.png"))
    return result, model


def plot_history(result, path):
    """PNG of the validation loss (with the trivial solution's loss) and of Y0's error."""
    hist = result["history"]
    spe = result["steps_per_epoch"]
    it = spe * np.arange(1, len(hist.get("val_loss", [])) + 1)
    panels = 2 if "y0_relative_error" in hist else 1
    fig, axes = subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.semilogy(it, hist.get("val_loss", []), label="validation loss")
    ax.axhline(result["trivial_loss"], color="gray", ls="--", label="trivial (Z = 0) loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("E|g(X_T) - Y_T|^2")
    ax.legend()
    if panels == 2:
        ax = axes[0, 1]
        ax.semilogy(it, hist["y0_relative_error"], label="|y0 - ref| / ref")
        ax.axhline(2e-3, color="gray", ls="--", label="0.2%")
        ax.set_xlabel("iteration")
        ax.set_ylabel("relative error of u(0, x0)")
        ax.legend()
    fig.suptitle(f"{result['problem']} (d = {result['dim']}), {result['z_network']} Z network")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


