"""Is the 1-D gap to the 10x speed goal overhead or arithmetic? Both solves compiled with XLA.

In one velocity dimension the NumPy learned moment solve and the NumPy kinetic solve take
about as long (benchmarks/README.md), and both spend much of their time in the overhead of
NumPy calls on 100-cell arrays. This script times each solve twice on the same cases: as the
library runs it by default (NumPy, single-threaded BLAS) and with `jit_compile=True`, as XLA
programs (`tf.function(jit_compile=True)` around a `tf.while_loop` over the time steps, no
Python per step):

- the kinetic solve: `problem.solve(f0, t_end, jit_compile=True)` (`BGK1D`'s Strang
  splitting of the exact relaxation around the SSP-RK2 MUSCL minmod upwind transport, the
  discrete Maxwellian by Newton's method to the same tolerance);
- the learned solve: `model.solve(..., jit_compile=True)` (the encoder, then `MomentSolver`'s
  time loop with the closure evaluated as `NumpyClosure` does it: three network passes, the
  network in the model's `closure_dtype`, `--closure_dtype` to change it), from the same
  distribution as the NumPy solve.

Each compiled solve is checked against its NumPy counterpart (the largest difference is
printed and stored). All NumPy timings are taken before the first XLA compilation in this
process (compiling slows this thread's later NumPy allocations: benchmarks/README.md, stop 35).
Min of `--repeats` wall times; the compile time (the first call) is reported apart: each
program is compiled once, on the first eps, and reused for the others.

The closure's shape, not its accuracy, sets the cost of a learned step: without `--model_dir`
a heat-flux model with `--num_moments` moments and `--closure_units` hidden widths is fitted
for a few epochs on 8 runs (its errors mean nothing and are not reported; its solves can be
unstable, and then the compiled and NumPy float32 solves drift apart). Writes
`benchmarks/results/moment_closure_compiled.json` (or `--output`). ~2 min alone on 2 cores.

    python benchmarks/moment_closure_compiled.py --model_dir runs/model --closure_dtype float32
    python benchmarks/moment_closure_compiled.py --closure_units 16,16 --closure_dtype float32
"""

import argparse
import functools
import os
import time

import numpy as np

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.data import generate_kinetic_data, initial_state, parse_cases
from mlcmk.training.moment_closure import LearnedMomentModel, train_moment_model

EPS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def best_of(repeats, fn, *args):
    """`(min wall time in ms, last result)` of `repeats` calls `fn(*args)`."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default=None, help="a saved LearnedMomentModel")
    parser.add_argument("--num_moments", type=int, default=3)
    parser.add_argument("--closure_units", default="64,64",
                        help="hidden widths of the closure fitted here (without --model_dir)")
    parser.add_argument("--closure_dtype", default=None,
                        help="float64 or float32: the closure network's arithmetic in both "
                             "learned solves (default: the model's)")
    parser.add_argument("--num_x", type=int, default=100)
    parser.add_argument("--num_v", type=int, default=64)
    parser.add_argument("--t_end", type=float, default=0.1)
    parser.add_argument("--test_cases", default="smooth:1000,smooth:1001,sod:1002")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "moment_closure_compiled.json"))
    args = parser.parse_args()
    config.set_precision("float64")
    if args.model_dir:
        model = LearnedMomentModel.load(args.model_dir)
    else:
        data = generate_kinetic_data(num_runs=8, seed=0, num_x=args.num_x, num_v=args.num_v,
                                     t_end=args.t_end)
        model, _ = train_moment_model(data, num_moments=args.num_moments, autoencoder_epochs=2,
                                      closure_epochs=2, heat_flux_moment=True,
                                      frozen_speed_factor=3.0, closure_units=tuple(
                                          int(u) for u in args.closure_units.split(",")))
    if args.closure_dtype:
        model.closure_dtype = args.closure_dtype
    cases = parse_cases(args.test_cases)
    rows = []
    for eps in EPS:  # NumPy first: no XLA compilation has run in this process yet
        problem = BGK1D(eps=eps, num_x=args.num_x, num_v=args.num_v)
        for kind, seed in cases:
            f0 = problem.maxwellian(*initial_state(problem, np.random.default_rng(seed), kind))
            kinetic_ms, f_end = best_of(args.repeats, problem.solve, f0, args.t_end)
            learned_ms, learned = best_of(args.repeats, model.solve, f0, eps, problem.dx,
                                          args.t_end)
            rows.append({"eps": eps, "case": f"{kind}:{seed}", "f0": f0, "f_end": f_end,
                         "learned": learned, "numpy_ms": {"kinetic": kinetic_ms,
                                                          "learned": learned_ms}})

    for row in rows:
        problem = BGK1D(eps=row["eps"], num_x=args.num_x, num_v=args.num_v)
        f0 = row.pop("f0")
        solves = {"kinetic": (functools.partial(problem.solve, jit_compile=True), f0,
                              args.t_end),
                  "learned": (functools.partial(model.solve, jit_compile=True), f0,
                              problem.eps, problem.dx, args.t_end)}
        row["xla_ms"], row["xla_compile_s"] = {}, {}
        for name, (solve, *solve_args) in solves.items():
            begin = time.perf_counter()
            solve(*solve_args)  # each program compiles once (first eps), then is reused
            row["xla_compile_s"][name] = time.perf_counter() - begin
            row["xla_ms"][name], out = best_of(args.repeats, solve, *solve_args)
            if name == "kinetic":
                row["kinetic_max_difference"] = float(np.max(np.abs(out - row.pop("f_end"))))
            else:
                row["learned_u_max_difference"] = float(np.max(np.abs(out[1]
                                                                      - row.pop("learned")[1])))
        row["speedup"] = {k: row[f"{k}_ms"]["kinetic"] / row[f"{k}_ms"]["learned"]
                          for k in ("numpy", "xla")}
        print(f"eps={row['eps']:<6g} {row['case']:<12s} NumPy kinetic "
              f"{row['numpy_ms']['kinetic']:6.1f} learned {row['numpy_ms']['learned']:6.1f} ms "
              f"({row['speedup']['numpy']:.2f}x) | XLA kinetic {row['xla_ms']['kinetic']:6.1f} "
              f"learned {row['xla_ms']['learned']:6.1f} ms ({row['speedup']['xla']:.2f}x) | "
              f"max diff kinetic {row['kinetic_max_difference']:.1e}, learned u "
              f"{row['learned_u_max_difference']:.1e}", flush=True)
    summary = {}
    for eps in EPS:
        mine = [r for r in rows if r["eps"] == eps]
        summary[str(eps)] = {k: float(np.median([r["speedup"][k] for r in mine]))
                             for k in ("numpy", "xla")}
    print("median speed-up (kinetic / learned) per eps, NumPy | XLA:")
    for eps, s in summary.items():
        print(f"  eps={eps:<6s} {s['numpy']:.2f}x | {s['xla']:.2f}x")
    write_json(args.output, {
        # --num_moments and --closure_units shape a closure fitted here, not a loaded one.
        "settings": {k: v for k, v in vars(args).items() if k != "output" and not (
            args.model_dir and k in ("num_moments", "closure_units"))},
        "closure": {"num_moments": model.closure.num_moments,
                    "units": list(model.closure.units),
                    "closure_dtype": model.closure_dtype, "flux": model.flux,
                    "trained_here": args.model_dir is None},
        "rows": rows, "median_speedup": summary})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
