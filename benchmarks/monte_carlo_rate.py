"""Monte Carlo against grid quadrature as the dimension grows, and the Runge phenomenon.

1. The integral of f(x) = prod_k exp(-x_k^2) over [0, 1]^d (exact: (sqrt(pi)/2 erf 1)^d) with
   about N points: the tensor midpoint rule (k^d points, error O(N^{-2/d})) and Monte Carlo
   (error O(N^{-1/2}) whatever d, root mean square over repeats).
2. Runge: interpolating 1/(1 + 25 x^2) on [-1, 1] by polynomials through equispaced nodes
   diverges as the degree grows; through Chebyshev nodes it converges.
Writes `benchmarks/results/monte_carlo_rate.json` and `.png`.

    python benchmarks/monte_carlo_rate.py                 # seconds
"""

import argparse
import math
import os

import numpy as np
from numpy.polynomial import chebyshev

from mlcmk.io import write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def quadrature_errors(dims, budget, repeats, seed):
    rng = np.random.default_rng(seed)
    one_d = math.sqrt(math.pi) / 2 * math.erf(1.0)
    rows = []
    for d in dims:
        exact = one_d**d
        k = max(1, int(round(budget ** (1.0 / d))))
        nodes = (np.arange(k) + 0.5) / k
        # Product rule: the integrand factorises, so the grid sum is the 1-d sum to the d.
        grid = np.mean(np.exp(-nodes**2)) ** d
        n = k**d
        mc = [np.mean(np.exp(-np.sum(rng.uniform(size=(n, d)) ** 2, axis=1)))
              for _ in range(repeats)]
        rows.append({"d": d, "points": n, "grid_rel_error": abs(grid - exact) / exact,
                     "mc_rel_rms_error": float(np.sqrt(np.mean((np.array(mc) - exact) ** 2)))
                     / exact})
    return rows


def runge(degrees):
    x_eval = np.linspace(-1, 1, 4001)
    f = lambda x: 1.0 / (1.0 + 25.0 * x**2)  # noqa: E731
    rows = []
    for n in degrees:
        equi = np.linspace(-1, 1, n + 1)
        cheb = np.cos((2 * np.arange(n + 1) + 1) * np.pi / (2 * (n + 1)))
        rows.append({"degree": n,
                     "equispaced_max_error": float(np.max(np.abs(
                         chebyshev.Chebyshev.fit(equi, f(equi), n)(x_eval) - f(x_eval)))),
                     "chebyshev_max_error": float(np.max(np.abs(
                         chebyshev.Chebyshev.fit(cheb, f(cheb), n)(x_eval) - f(x_eval))))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 10])
    parser.add_argument("--budget", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "monte_carlo_rate"))
    args = parser.parse_args()
    quad = quadrature_errors(args.dims, args.budget, args.repeats, args.seed)
    for r in quad:
        print(f"d={r['d']:2d} N={r['points']:7d} grid rel. error={r['grid_rel_error']:.2e} "
              f"MC rel. RMS error={r['mc_rel_rms_error']:.2e}")
    run = runge([4, 8, 12, 16, 20, 24, 32])
    for r in run:
        print(f"degree {r['degree']:2d}: equispaced max error {r['equispaced_max_error']:.2e}, "
              f"Chebyshev {r['chebyshev_max_error']:.2e}")
    write_json(args.out + ".json", {"args": vars(args), "quadrature": quad, "runge": run})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    axes[0].semilogy([r["d"] for r in quad], [r["grid_rel_error"] for r in quad], "o-",
                     label="midpoint grid")
    axes[0].semilogy([r["d"] for r in quad], [r["mc_rel_rms_error"] for r in quad], "s-",
                     label="Monte Carlo (RMS)")
    axes[0].set_xlabel("dimension d")
    axes[0].set_ylabel(f"relative error, ~{args.budget} points")
    axes[1].semilogy([r["degree"] for r in run], [r["equispaced_max_error"] for r in run],
                     "o-", label="equispaced nodes")
    axes[1].semilogy([r["degree"] for r in run], [r["chebyshev_max_error"] for r in run],
                     "s-", label="Chebyshev nodes")
    axes[1].set_xlabel("polynomial degree")
    axes[1].set_ylabel("max error on [-1, 1]")
    for ax in axes:
        ax.legend()
    fig.savefig(args.out + ".png", dpi=120)
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
