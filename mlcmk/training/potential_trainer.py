"""Train and evaluate a `DeepPotential` on DeePMD systems: the logic behind `mlcmk potential`."""

import os
import time

import keras
import numpy as np

from mlcmk import config
from mlcmk._plotting import subplots
from mlcmk._validation import check_positive_int
from mlcmk.io import write_json
from mlcmk.models.deep_potential import DeepPotential, make_dataset


def predict_systems(model, systems, batch_size=16):
    """Model predictions for every frame: list of dicts (energy, force) per system."""
    out = []
    for system in systems:
        energies, forces = [], []
        for start in range(0, len(system.energy), batch_size):
            part = slice(start, start + batch_size)
            coord = system.coord[part]
            types = np.tile(system.atom_types, (len(coord), 1))
            box = None if system.box is None else system.box[part]
            pred = model.compute(coord, types, box)
            energies.append(pred["energy"].numpy())
            forces.append(pred["force"].numpy())
        out.append({"energy": np.concatenate(energies), "force": np.concatenate(forces)})
    return out


def error_metrics(systems, predictions):
    """Energy RMSE per atom (eV/atom) and force RMSE (eV/Å) over all frames of `systems`."""
    de, df = [], []
    for system, pred in zip(systems, predictions, strict=True):
        de.append((pred["energy"] - system.energy) / system.atom_types.shape[0])
        df.append((pred["force"] - system.force).ravel())
    de, df = np.concatenate(de), np.concatenate(df)
    return {"energy_rmse_per_atom": float(np.sqrt(np.mean(de**2))),
            "energy_mae_per_atom": float(np.mean(np.abs(de))),
            "force_rmse": float(np.sqrt(np.mean(df**2))),
            "force_mae": float(np.mean(np.abs(df))),
            "frames": int(de.size)}


def plot_parity(systems, predictions, path, title=""):
    """Writes a PNG of predicted against reference energies per atom and force components;
    returns the `Figure` (the last expression of a notebook cell, it is shown there too)."""
    fig, axes = subplots(1, 2, figsize=(9, 4.2))
    for system, pred in zip(systems, predictions, strict=True):
        n = system.atom_types.shape[0]
        axes[0].plot(system.energy / n, pred["energy"] / n, ".", ms=3)
        axes[1].plot(system.force.ravel(), pred["force"].ravel(), ".", ms=1, alpha=0.4)
    for ax, label in zip(axes, ["energy (eV/atom)", "force component (eV/Å)"], strict=True):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
    metrics = error_metrics(systems, predictions)
    axes[0].set_title(f"RMSE {1e3 * metrics['energy_rmse_per_atom']:.2f} meV/atom")
    axes[1].set_title(f"RMSE {1e3 * metrics['force_rmse']:.1f} meV/Å")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    return fig


class _EpochTimes(keras.callbacks.Callback):
    """Wall time of every epoch (the first one holds tracing and XLA compilation)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _Progress(keras.callbacks.Callback):
    def __init__(self, every, total, printer=print):
        super().__init__()
        self.every, self.total, self.printer = every, total, printer
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        elapsed = time.perf_counter() - self.start
        self.printer(f"step {step:6d}/{self.total}  loss {logs.get('loss', np.nan):.4g}  "
                     f"E rmse {1e3 * logs.get('energy_rmse_per_atom', np.nan):.2f} meV/atom  "
                     f"F rmse {1e3 * logs.get('force_rmse', np.nan):.1f} meV/Å  "
                     f"({1e3 * elapsed / max(step, 1):.1f} ms/step)")


def train_potential(train_systems, test_systems=None, *, type_map=None, steps=2000,
                    batch_size=1, learning_rate=1e-3, stop_learning_rate=1e-5, decay_steps=100,
                    model_kwargs=None, precision="float64", seed=0, output_dir=None,
                    log_every=None, verbose=1, printer=print, jit_compile=True):
    """Builds, fits and evaluates a `DeepPotential`; writes model.keras, result.json, parity.png.

    Args:
        train_systems, test_systems: lists of `mlcmk.data.System` (same type map).
        type_map: element names; default the training systems' type map.
        steps: optimizer steps. batch_size: frames per step.
        learning_rate, stop_learning_rate, decay_steps: DeePMD exponential decay.
        model_kwargs: further `DeepPotential` arguments (rcut, sel, neuron, ...).
        precision: "float64" (default) or "float32". seed: weights and batch order.
        output_dir: where the files go (None: nothing written).
        log_every: steps between progress lines (default steps / 10).
        jit_compile: neighbour lists computed once per frame on the host and the training
            step compiled with XLA (one compilation per system size); False: in-graph lists,
            no XLA.

    Returns:
        `(model, result)`: the trained model and a JSON-ready dict of metrics and timings.
    """
    steps = check_positive_int("steps", steps)
    if not train_systems:
        raise ValueError("`train_systems` is empty")
    config.set_precision(precision)
    config.set_seed(seed)
    type_map = list(type_map or train_systems[0].type_map)
    model = DeepPotential(type_map, **(model_kwargs or {}))
    stats = model.set_statistics(train_systems)
    model.compile(total_steps=steps, learning_rate=learning_rate,
                  stop_learning_rate=stop_learning_rate, decay_steps=decay_steps,
                  jit_compile=bool(jit_compile))
    log_every = max(1, min(steps, log_every or max(steps // 10, 1)))
    epochs = max(1, steps // log_every)
    timer = _EpochTimes()
    callbacks = [timer] + ([_Progress(log_every, epochs * log_every, printer)] if verbose else [])
    start = time.perf_counter()
    dataset = make_dataset(train_systems, batch_size, seed=seed,
                           neighbors=model if jit_compile else None)
    # (shuffled by `make_dataset`: Keras would warn that its own shuffle is ignored)
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=log_every, shuffle=False,
                        verbose=0, callbacks=callbacks)
    train_seconds = time.perf_counter() - start
    steps_done = epochs * log_every
    result = {"type_map": type_map, "steps": steps_done, "batch_size": batch_size,
              "precision": precision, "seed": seed, "train_seconds": train_seconds,
              "ms_per_step": 1e3 * train_seconds / steps_done,
              # After the first epoch (tracing, XLA compilation): the cost of a step.
              "ms_per_step_steady": 1e3 * float(np.median(timer.seconds[1:] or timer.seconds))
              / log_every,
              "first_epoch_seconds": timer.seconds[0],
              "energy_bias": stats["energy_bias"], "model_config": model.get_config(),
              "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
              "train": error_metrics(train_systems, predict_systems(model, train_systems))}
    if test_systems:
        predictions = predict_systems(model, test_systems)
        result["test"] = error_metrics(test_systems, predictions)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        model.save(os.path.join(output_dir, "model.keras"))
        result["model_path"] = os.path.join(output_dir, "model.keras")
        if test_systems:
            result["parity_png"] = os.path.join(output_dir, "parity.png")
            plot_parity(test_systems, predictions, result["parity_png"], "held-out frames")
        write_json(os.path.join(output_dir, "result.json"), result)
    return model, result
