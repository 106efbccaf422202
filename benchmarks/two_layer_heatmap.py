"""Seed figure 11: test error over width m and sample size n, with and without the 1/m factor.

Two-layer ReLU networks fit the target ReLU(x_1), x uniform on [0, 1]^20, by full-batch gradient
descent until the training loss (MSE) is below `--tol` or `--max-steps` steps are done.
Conventional: f = sum_j a_j relu(w_j . x + b_j), a_j ~ N(0, 1/m), SGD(lr); mean-field:
f = (1/m) sum_j a_j relu(w_j . x + b_j), a_j ~ N(0, 1), trained by `ParticleWassersteinFlow`
(SGD with step eta * m). Inner weights N(0, I/d) in both. Test error on 5000 fresh points.
Writes `benchmarks/results/two_layer_heatmap.json` and `.png`.

    python benchmarks/two_layer_heatmap.py --grid tiny      # 2 x 2, ~3 min
    python benchmarks/two_layer_heatmap.py                  # reduced 4 x 4, ~25 min on 2 cores
    python benchmarks/two_layer_heatmap.py --grid full --max-steps 200000   # the paper's (hours)

At the anchor's learning rates no cell reaches the 1e-7 tolerance within 10^4 steps: the JSON
records the training loss reached and `converged` per cell.
"""

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mlcmk import TwoLayerNetwork, config
from mlcmk.io import write_json
from mlcmk.training import ParticleWassersteinFlow

GRIDS = {
    "tiny": (np.array([2.0, 3.0]), np.array([1.8, 2.4])),
    "reduced": (np.array([2.0, 2.5, 3.0, 3.5]), np.array([1.8, 2.1, 2.4, 2.65])),
    "full": (np.linspace(2.0, 4.5, 8), np.linspace(1.8, 2.65, 8)),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class StopAtTolerance(keras.callbacks.Callback):
    def __init__(self, tol):
        super().__init__()
        self.tol = tol

    def on_epoch_end(self, epoch, logs=None):
        if logs["loss"] < self.tol:
            self.model.stop_training = True


def run_cell(scaling, m, n, args, x_test, y_test, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, args.dim))
    y = np.maximum(x[:, :1], 0.0)
    keras.utils.set_random_seed(seed)
    net = TwoLayerNetwork(m, scaling=scaling)
    net.build((None, args.dim))
    if scaling == "mean_field":
        model = ParticleWassersteinFlow(net, time_step=args.eta)
        model.compile(loss="mse", steps_per_execution=args.chunk)
    else:
        model = net
        model.compile(optimizer=keras.optimizers.SGD(args.lr), loss="mse",
                      steps_per_execution=args.chunk)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    start = time.perf_counter()
    history = model.fit(data, epochs=args.max_steps // args.chunk, steps_per_epoch=args.chunk,
                        verbose=0, callbacks=[StopAtTolerance(args.tol)])
    wall = time.perf_counter() - start
    train = float(history.history["loss"][-1])
    test = float(np.mean((np.asarray(net(x_test)) - y_test) ** 2))
    return {"scaling": scaling, "m": m, "n": n, "train_loss": train, "test_error": test,
            "steps": len(history.history["loss"]) * args.chunk,
            "converged": train < args.tol, "wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="reduced")
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--max-steps", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=500, help="steps per compiled call")
    parser.add_argument("--lr", type=float, default=5e-4, help="conventional learning rate")
    parser.add_argument("--eta", type=float, default=0.5, help="mean-field time step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "two_layer_heatmap"))
    args = parser.parse_args()
    config.set_precision("float64")
    log_m, log_n = GRIDS[args.grid]
    widths = [int(round(10**v)) for v in log_m]
    sizes = [int(round(10**v)) for v in log_n]
    rng = np.random.default_rng(12345)
    x_test = rng.uniform(size=(5000, args.dim))
    y_test = np.maximum(x_test[:, :1], 0.0)
    rows = []
    for scaling in ("conventional", "mean_field"):
        for m in widths:
            for n in sizes:
                row = run_cell(scaling, m, n, args, x_test, y_test, args.seed)
                rows.append(row)
                print(f"{scaling:12s} m={m:6d} n={n:4d} train={row['train_loss']:.2e} "
                      f"test={row['test_error']:.2e} steps={row['steps']} "
                      f"{'converged' if row['converged'] else 'NOT converged'} "
                      f"{row['wall_s']:.1f}s", flush=True)
    write_json(args.out + ".json", {"args": vars(args), "widths": widths, "sizes": sizes,
                                    "rows": rows,
                                    "note": "timings on 2 shared (contended) cores"})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, scaling in zip(axes, ("conventional", "mean_field"), strict=True):
        grid = np.array([[next(r["test_error"] for r in rows if r["scaling"] == scaling
                               and r["m"] == m and r["n"] == n) for m in widths] for n in sizes])
        image = ax.imshow(np.log10(grid), origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(widths)), [f"{v:.2f}" for v in log_m])
        ax.set_yticks(range(len(sizes)), [f"{v:.2f}" for v in log_n])
        ax.set_xlabel("log10 m")
        ax.set_ylabel("log10 n")
        ax.set_title(f"{scaling}: log10 test error")
        fig.colorbar(image, ax=ax)
    fig.savefig(args.out + ".png", dpi=120)
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
