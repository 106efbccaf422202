"""u(0, 0) of the 100-d HJB equation against lambda (seed figure 7, right).

The exact value (Hopf-Cole by 1-D quadrature, `HJBLQ.radial_value`), plain Hopf-Cole Monte Carlo
(with its standard error; biased at large lambda) and Deep BSDE at a few lambdas. Prints a table,
writes `benchmarks/results/hjb_lambda_sweep.json` and `.png`. About 5 minutes on 2 cores.
"""

import argparse
import os

from mlcmk.io import write_json
from mlcmk.problems.bsde import HJBLQ, hjb_lambda_sweep
from mlcmk.training.bsde_solver import solve


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lams", nargs="+", type=float,
                        default=[0, 1, 2, 5, 10, 20, 30, 40, 50])
    parser.add_argument("--bsde_lams", nargs="+", type=float, default=[1, 10, 30, 50])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                        "hjb_lambda_sweep.json"))
    args = parser.parse_args()
    mc = hjb_lambda_sweep(args.lams, num_samples=1_000_000)
    rows = []
    for lam, exact, value, stderr in mc:
        print(f"lambda {lam:5.1f}: exact u(0,0) = {exact:.5f}; Monte Carlo {value:.5f} ± "
              f"{stderr:.1e} ({(value - exact) / stderr:+.1f} standard errors)", flush=True)
        rows.append({"lam": lam, "exact": exact, "monte_carlo": value, "stderr": stderr})
    bsde = []
    for lam in args.bsde_lams:
        problem = HJBLQ(lam=lam)
        r, _ = solve(problem, iterations=args.iterations, verbose=0, z_error_paths=0)
        bsde.append({"lam": lam, "y0": r["y0"], "reference": r["reference"],
                     "relative_error": r["relative_error"], "loss_ratio": r["loss_ratio"]})
        print(f"lambda {lam:5.1f}: Deep BSDE u(0,0) = {r['y0']:.5f}, reference "
              f"{r['reference']:.5f}, relative error {r['relative_error']:.2e}", flush=True)
    write_json(args.output, {"monte_carlo": rows, "deep_bsde": bsde})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([r["lam"] for r in rows], [r["exact"] for r in rows], "-",
            label="exact (Hopf-Cole, quadrature)")
    ax.plot([r["lam"] for r in rows], [r["monte_carlo"] for r in rows], "--",
            label="Hopf-Cole Monte Carlo, 1e6")
    ax.plot([b["lam"] for b in bsde], [b["y0"] for b in bsde], "o", label="Deep BSDE")
    ax.set_xlabel("lambda")
    ax.set_ylabel("u(0, 0)")
    ax.set_title("HJB, d = 100")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output[:-5] + ".png", dpi=110)
    print("written", args.output)


if __name__ == "__main__":
    main()
