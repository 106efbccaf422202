"""A priori estimates: test error and path norm against width at fixed n, regularised or not.

Two-layer mean-field ReLU networks f = (1/m) sum_j a_j relu(w_j . x + b_j) fit the target
ReLU(x_1) + noise (x uniform on [-1, 1]^d, noise N(0, sigma^2)) from n samples by full-batch Adam
on the regularised loss of seed eq. (26), (1/2n) sum (f - y)^2 + lambda sqrt(log(2d)/n) |theta|_P,
with lambda = 0 (unregularised) and lambda > 0. The theory (E, Ma, Wu 2019) bounds the
regularised model's population risk by O(|f*|_B^2 / m + |f*|_B sqrt(log(2d)/n)) whatever m,
with a path norm that stays O(|f*|_B) (here |f*|_B <= 1 + bias terms); no such bound holds
without the penalty. Writes `benchmarks/results/a_priori_estimates.json` and `.png`.

    python benchmarks/a_priori_estimates.py              # ~5 min on 2 cores
"""

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

from mlcmk import TwoLayerNetwork, config
from mlcmk.io import write_json
from mlcmk.training import PathNormRegularized, path_norm

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--widths", type=int, nargs="+", default=[10, 40, 160, 640, 2560])
    parser.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "a_priori_estimates"))
    args = parser.parse_args()
    config.set_precision("float64")
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-1, 1, size=(args.n, args.dim))
    y = np.maximum(x[:, :1], 0) + args.noise * rng.standard_normal((args.n, 1))
    x_test = rng.uniform(-1, 1, size=(5000, args.dim))
    y_test = np.maximum(x_test[:, :1], 0)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    rows = []
    for lam in args.lams:
        for m in args.widths:
            keras.utils.set_random_seed(args.seed)
            net = TwoLayerNetwork(m)
            model = PathNormRegularized(net, lam=lam, num_samples=args.n)
            model.build((None, args.dim))
            model.compile(optimizer=keras.optimizers.Adam(args.lr), steps_per_execution=500)
            history = model.fit(data, epochs=args.steps // 500, steps_per_epoch=500, verbose=0)
            row = {"lam": lam, "m": m,
                   "train_risk": float(history.history["risk"][-1]),
                   "test_error": float(np.mean((np.asarray(net(x_test)) - y_test) ** 2)),
                   "path_norm": float(path_norm(net))}
            rows.append(row)
            print(f"lambda={lam:<5g} m={m:5d} train risk={row['train_risk']:.3e} "
                  f"test error={row['test_error']:.3e} path norm={row['path_norm']:.3f}",
                  flush=True)
    write_json(args.out + ".json", {"args": vars(args), "rows": rows})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for lam in args.lams:
        sel = [r for r in rows if r["lam"] == lam]
        label = "unregularised" if lam == 0 else f"lambda = {lam:g}"
        axes[0].loglog([r["m"] for r in sel], [r["test_error"] for r in sel], "o-", label=label)
        axes[1].semilogx([r["m"] for r in sel], [r["path_norm"] for r in sel], "o-", label=label)
    axes[0].set_ylabel("test error (MSE to ReLU(x_1))")
    axes[1].set_ylabel("path norm")
    for ax in axes:
        ax.set_xlabel("width m")
        ax.legend()
    fig.savefig(args.out + ".png", dpi=120)
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
