"""Seed figure 12: extended MSA against SGD, Adagrad and Adam, per iteration and per second.

Toy (Li, Chen, Tai, E 2018): fit sin x on [-pi, pi], 100 train / 100 test points, input lifted to
5 dimensions by repetition, 20 residual tanh layers of width 5, step 0.25, all weights zero,
loss (sum of the 5 outputs - y)^2 plus 1e-3 |theta|^2, full batch. E-MSA: 10 L-BFGS
iterations per layer, warm start + 0.005 perturbation; rho = 10 by default, since mlcmk
averages both penalties over the samples with unnormalised costates (the paper's rho = 1 is
in its own normalisation, which its text does not pin down). Baselines from the same initialisation:
SGD 0.1, Adagrad 0.1, Adam 0.005. Digits: scikit-learn's 8x8 digits (shipped with the package),
pixels / 16, 64-wide stream, 10 layers, softmax over the first 10 coordinates, full batch.
Writes `benchmarks/results/extended_msa.json` and `.png`.

    python benchmarks/extended_msa.py                     # 500 toy, 30 digits iterations (~12 min)
    python benchmarks/extended_msa.py --toy-iterations 100 --digits-iterations 20
"""

import argparse
import os
import time

import keras
import numpy as np
from machine import machine_load  # benchmarks/machine.py

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.training import ExtendedMSA, ResidualControlNetwork

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Clock(keras.callbacks.Callback):
    """Wall time at the end of every epoch (one epoch = one full-batch iteration)."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.times = []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def run(make_model, optimizer, x, y, x_test, y_test, iterations, metric_fn):
    model = make_model()
    model.build(x.shape)
    if optimizer is None:
        model.compile()
    else:
        model.compile(optimizer=optimizer)
    clock = Clock()
    history = model.fit(x, y, batch_size=len(x), epochs=iterations, shuffle=False, verbose=0,
                        callbacks=[clock])
    return {"loss": [float(v) for v in history.history["loss"]], "time_s": clock.times,
            "final_train_objective": float(model.evaluate(x, y, batch_size=len(x), verbose=0)),
            "test": metric_fn(model, x_test, y_test)}


def toy(iterations, rho):
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, size=(100, 1))
    x_test = rng.uniform(-np.pi, np.pi, size=(100, 1))
    kwargs = {"num_layers": 20, "width": 5, "step_size": 0.25, "regularization": 1e-3}

    def test_mse(model, xt, yt):
        return {"test_mse": float(np.mean((np.asarray(model(xt)) - yt) ** 2))}

    runs = {"E-MSA": (lambda: ExtendedMSA(rho=rho, **kwargs), None),
            "SGD": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.SGD(0.1)),
            "Adagrad": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.Adagrad(0.1)),
            "Adam": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.Adam(0.005))}
    return {name: run(make, opt, x, np.sin(x), x_test, np.sin(x_test), iterations, test_mse)
            for name, (make, opt) in runs.items()}


def digits(iterations, rho):
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data / 16.0, data.target
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    kwargs = {"num_layers": 10, "width": 64, "step_size": 0.1, "readout": "slice",
              "output_dim": 10, "terminal_loss": "softmax_cross_entropy",
              "regularization": 1e-4, "kernel_initializer": "zeros"}

    def accuracy(model, xt, yt):
        return {"test_accuracy": float(np.mean(np.argmax(np.asarray(model(xt)), 1) == yt))}

    runs = {"E-MSA": (lambda: ExtendedMSA(rho=rho, **kwargs), None),
            "SGD": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.SGD(0.1)),
            "Adagrad": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.Adagrad(0.1)),
            "Adam": (lambda: ResidualControlNetwork(**kwargs), keras.optimizers.Adam(0.005))}
    return {name: run(make, opt, x[:split], y[:split], x[split:], y[split:], iterations,
                      accuracy) for name, (make, opt) in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-iterations", type=int, default=500)
    parser.add_argument("--digits-iterations", type=int, default=30)
    parser.add_argument("--rho", type=float, default=10.0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "extended_msa"))
    args = parser.parse_args()
    config.set_precision("float64")
    results = {"args": vars(args), "machine_load": {"start": machine_load()}}
    results["toy"] = toy(args.toy_iterations, args.rho)
    if args.digits_iterations:
        results["digits"] = digits(args.digits_iterations, args.rho)
    for problem in ("toy", "digits"):
        for name, r in results.get(problem, {}).items():
            # Median of the per-iteration times: the first iteration also traces the step.
            per_iter = float(np.median(np.diff([0.0, *r["time_s"]])))
            r["median_s_per_iteration"] = per_iter
            print(f"{problem:6s} {name:8s} loss[0]={r['loss'][0]:.4g} "
                  f"loss[10]={r['loss'][min(10, len(r['loss']) - 1)]:.4g} "
                  f"final={r['final_train_objective']:.4g} {r['test']} "
                  f"{1e3 * per_iter:.1f} ms/iter", flush=True)
    results["machine_load"]["end"] = machine_load()
    write_json(args.out + ".json", results)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [p for p in ("toy", "digits") if p in results]
    fig, axes = plt.subplots(len(problems), 2, figsize=(10, 3.6 * len(problems)),
                             constrained_layout=True, squeeze=False)
    for row, problem in zip(axes, problems, strict=True):
        for name, r in results[problem].items():
            row[0].semilogy(np.arange(1, len(r["loss"]) + 1), r["loss"], label=name)
            row[1].semilogy(r["time_s"], r["loss"], label=name)
        row[0].set_xlabel("iteration")
        row[1].set_xlabel("wall time (s)")
        for ax in row:
            ax.set_ylabel(f"{problem}: training objective")
            ax.legend()
    fig.savefig(args.out + ".png", dpi=120)
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
