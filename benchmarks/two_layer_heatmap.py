"""Seed figure 11: test error over width m and sample size n, with and without the 1/m factor.

Two-layer ReLU networks fit the target ReLU(x_1), x uniform on [0, 1]^20, by full-batch gradient
descent until the training loss (MSE) is below `--tol` or `--max-steps` steps are done.
Conventional: f = sum_j a_j relu(w_j . x + b_j), a_j ~ N(0, 1/m), SGD(lr); mean-field:
f = (1/m) sum_j a_j relu(w_j . x + b_j), a_j ~ N(0, 1), trained by `ParticleWassersteinFlow`
(SGD with step eta * m). Inner weights N(0, I/d) in both. Test error on 5000 fresh points.

Step size (`--step curvature`, the default): lr = c / lambda_max, lambda_max the largest
eigenvalue of the Gauss-Newton matrix of the training MSE at initialisation (power iteration,
`mlcmk.training.gauss_newton_max_eigenvalue`), c = `--c` < 2; the mean-field flow gets the same
raw rate, i.e. the flow-time step eta = c / (m lambda_max). If a run diverges (training loss
non-finite or above 10x its start) it is restarted from the same initialisation with c halved
(at most twice). `--step anchor` uses the anchor's fixed rates `--lr` and `--eta` instead.
The training loss is the exact full-batch MSE, evaluated every `--chunk` steps (one compiled
call of `--chunk` GD steps), so `steps` is a multiple of `--chunk`.
Writes `benchmarks/results/two_layer_heatmap.json` and `.png`.

    python benchmarks/two_layer_heatmap.py --grid tiny      # 2 x 2
    python benchmarks/two_layer_heatmap.py                  # reduced 4 x 4, < 30 min on 2 cores
    python benchmarks/two_layer_heatmap.py --grid full --max-steps 200000   # the paper's (hours)
    python benchmarks/two_layer_heatmap.py --scalings conventional --log-m 2 2.5 --log-n 2.4 2.65 \
        --max-steps 150000 --out benchmarks/results/two_layer_heatmap_long   # m < n, longer
"""

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf
from machine import machine_load  # benchmarks/machine.py

from mlcmk import TwoLayerNetwork, config
from mlcmk.io import write_json
from mlcmk.training import ParticleWassersteinFlow, gauss_newton_max_eigenvalue

GRIDS = {
    "tiny": (np.array([2.0, 3.0]), np.array([1.8, 2.4])),
    "reduced": (np.array([2.0, 2.5, 3.0, 3.5]), np.array([1.8, 2.1, 2.4, 2.65])),
    "full": (np.linspace(2.0, 4.5, 8), np.linspace(1.8, 2.65, 8)),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class TrainLossMonitor(keras.callbacks.Callback):
    """Exact full-batch training MSE after every chunk; stops at `tol` or on divergence."""

    def __init__(self, net, x, y, tol):
        super().__init__()
        self.net, self.tol = net, tol
        self.x = tf.constant(x, dtype=net.compute_dtype)
        self.y = tf.constant(y, dtype=net.compute_dtype)
        self.loss_fn = tf.function(lambda: tf.reduce_mean(tf.square(self.net(self.x) - self.y)))
        self.start = float(self.loss_fn())
        self.losses, self.diverged = [], False

    def on_epoch_end(self, epoch, logs=None):
        loss = float(self.loss_fn())
        self.losses.append(loss)
        if not np.isfinite(loss) or loss > 10 * self.start:
            self.diverged = True
            self.model.stop_training = True
        elif loss < self.tol:
            self.model.stop_training = True


def train(scaling, m, x, y, dim, lr, args, seed):
    keras.utils.set_random_seed(seed)
    net = TwoLayerNetwork(m, scaling=scaling)
    net.build((None, dim))
    if scaling == "mean_field":
        model = ParticleWassersteinFlow(net, time_step=lr / m)
        model.compile(loss="mse", steps_per_execution=args.chunk)
    else:
        model = net
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse",
                      steps_per_execution=args.chunk)
    monitor = TrainLossMonitor(net, x, y, args.tol)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, epochs=args.max_steps // args.chunk, steps_per_epoch=args.chunk, verbose=0,
              shuffle=False, callbacks=[monitor])
    return net, monitor


def run_cell(scaling, m, n, args, x_test, y_test, seed):
    rng = np.random.default_rng(seed)
    dtype = config.get_precision()
    x = rng.uniform(size=(n, args.dim)).astype(dtype)
    y = np.maximum(x[:, :1], 0.0)
    start = time.perf_counter()
    lam = None
    c = args.c
    if args.step == "curvature":
        keras.utils.set_random_seed(seed)
        probe = TwoLayerNetwork(m, scaling=scaling)
        probe.build((None, args.dim))
        lam, _ = gauss_newton_max_eigenvalue(probe, x)
        lr = c / lam
    else:
        lr = args.eta * m if scaling == "mean_field" else args.lr
    restarts = 0
    while True:
        net, monitor = train(scaling, m, x, y, args.dim, lr, args, seed)
        if not monitor.diverged or args.step != "curvature" or restarts == 2:
            break
        restarts += 1
        c, lr = c / 2, lr / 2
    wall = time.perf_counter() - start
    train_loss = monitor.losses[-1]
    test = float(np.mean((np.asarray(net(x_test.astype(dtype))) - y_test) ** 2))
    return {"scaling": scaling, "m": m, "n": n, "train_loss": train_loss, "test_error": test,
            "steps": len(monitor.losses) * args.chunk, "converged": train_loss < args.tol,
            "diverged": monitor.diverged, "restarts": restarts, "wall_s": wall,
            "gauss_newton_max_eigenvalue": lam, "c": c if args.step == "curvature" else None,
            "learning_rate": lr, "flow_time_step": lr / m if scaling == "mean_field" else None,
            "initial_train_loss": monitor.start}


def plot(rows, widths, sizes, log_m, log_n, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    values = np.log10([r["test_error"] for r in rows])
    vmin, vmax = values.min(), values.max()
    for ax, scaling in zip(axes, ("conventional", "mean_field"), strict=True):
        cell = {(r["m"], r["n"]): r for r in rows if r["scaling"] == scaling}
        grid = np.array([[cell[m, n]["test_error"] for m in widths] for n in sizes])
        image = ax.imshow(np.log10(grid), origin="lower", aspect="auto", cmap="viridis",
                          vmin=vmin, vmax=vmax)
        for i, n in enumerate(sizes):
            for j, m in enumerate(widths):
                if not cell[m, n]["converged"]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                               hatch="///", edgecolor="white", lw=0))
                ax.text(j, i, f"{np.log10(grid[i, j]):.1f}", ha="center", va="center",
                        color="white" if np.log10(grid[i, j]) < (vmin + vmax) / 2 else "black",
                        fontsize=8)
        # m = n in cell coordinates: interpolate log10 m -> column index, log10 n -> row index.
        line = np.linspace(min(log_m[0], log_n[0]), max(log_m[-1], log_n[-1]), 50)
        ax.plot(np.interp(line, log_m, np.arange(len(log_m)), left=np.nan, right=np.nan),
                np.interp(line, log_n, np.arange(len(log_n)), left=np.nan, right=np.nan),
                "r--", label="m = n")
        ax.set_xlim(-0.5, len(widths) - 0.5)
        ax.set_ylim(-0.5, len(sizes) - 0.5)
        ax.set_xticks(range(len(widths)), [f"{v:.2f}" for v in log_m])
        ax.set_yticks(range(len(sizes)), [f"{v:.2f}" for v in log_n])
        ax.set_xlabel("log10 m")
        ax.set_ylabel("log10 n")
        ax.set_title(f"{scaling}: log10 test error (/// = not converged)", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="reduced")
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--max-steps", type=int, default=30000)
    parser.add_argument("--chunk", type=int, default=500, help="steps per compiled call")
    parser.add_argument("--step", choices=("curvature", "anchor"), default="curvature")
    parser.add_argument("--c", type=float, default=1.8,
                        help="lr = c / lambda_max of the Gauss-Newton matrix (--step curvature)")
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="conventional learning rate (--step anchor)")
    parser.add_argument("--eta", type=float, default=0.5,
                        help="mean-field time step (--step anchor)")
    parser.add_argument("--precision", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-m", type=float, nargs="+", help="log10 widths (overrides --grid)")
    parser.add_argument("--log-n", type=float, nargs="+", help="log10 sizes (overrides --grid)")
    parser.add_argument("--scalings", nargs="+", choices=("conventional", "mean_field"),
                        default=["conventional", "mean_field"])
    parser.add_argument("--out", default=os.path.join(RESULTS, "two_layer_heatmap"))
    args = parser.parse_args()
    if not 0 < args.c < 2:
        parser.error(f"--c must be in (0, 2); received {args.c}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    config.set_precision(args.precision)
    log_m, log_n = GRIDS[args.grid]
    log_m = log_m if args.log_m is None else np.array(args.log_m)
    log_n = log_n if args.log_n is None else np.array(args.log_n)
    widths = [int(round(10**v)) for v in log_m]
    sizes = [int(round(10**v)) for v in log_n]
    rng = np.random.default_rng(12345)
    x_test = rng.uniform(size=(5000, args.dim))
    y_test = np.maximum(x_test[:, :1], 0.0)
    rows = []
    total, load_start = time.perf_counter(), machine_load()
    for scaling in args.scalings:
        for m in widths:
            for n in sizes:
                row = run_cell(scaling, m, n, args, x_test, y_test, args.seed)
                rows.append(row)
                print(f"{scaling:12s} m={m:5d} n={n:4d} lr={row['learning_rate']:.3g} "
                      f"train={row['train_loss']:.2e} test={row['test_error']:.2e} "
                      f"steps={row['steps']} restarts={row['restarts']} "
                      f"{'converged' if row['converged'] else 'NOT converged'} "
                      f"{row['wall_s']:.1f}s", flush=True)
    total = time.perf_counter() - total
    print(f"total wall time {total:.0f} s")
    write_json(args.out + ".json", {"args": vars(args), "widths": widths, "sizes": sizes,
                                    "rows": rows, "total_wall_s": total,
                                    "machine_load": {"start": load_start,
                                                     "end": machine_load()}})
    if len(args.scalings) == 2:
        plot(rows, widths, sizes, log_m, log_n, args.out + ".png")
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
